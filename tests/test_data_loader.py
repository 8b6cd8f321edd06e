"""Grain loader over the embedded dataset: batches, epochs, shards, checkpointable state."""

import numpy as np
import pytest

from xxact_jax.data import make_loader
from xxact_jax.data import open_dataset


@pytest.fixture(scope="module")
def train(embedded_dataset):
  return open_dataset(embedded_dataset, "train")


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_keys_dtypes_and_contents(train):
  batch = next(iter(make_loader(train, 32, seed=0)))
  k = train.metadata["max_elements"]
  expected = {"species": (np.int32, (32, k)), "fractions": (np.float32, (32, k)),
              "xrd": (np.float16, (32, 4250)), "formation_energy_per_atom": (np.float32, (32,)),
              "band_gap": (np.float32, (32,)), "crystal_system": (np.int32, (32,)),
              "spacegroup_number": (np.int32, (32,)), "index": (np.int64, (32,))}
  assert {key: (v.dtype.type, v.shape) for key, v in batch.items()} == expected
  for j in (0, 17):
    record = train[int(batch["index"][j])]
    for key in expected:
      np.testing.assert_array_equal(batch[key][j], record[key], err_msg=key)


def test_read_batch_keeps_order_with_duplicates(train):
  indices = np.array([40, 3, 40, 7, -1])
  batch = train.read_batch(indices)
  np.testing.assert_array_equal(batch["index"], [40, 3, 40, 7, len(train) - 1])
  for j, i in enumerate(batch["index"]):
    np.testing.assert_array_equal(batch["xrd"][j], train[int(i)]["xrd"])
  with pytest.raises(IndexError, match="out of range"):
    train.read_batch([len(train)])


def test_ordered_epoch_covers_every_row_once(train):
  loader = make_loader(train, 100, shuffle=False, num_epochs=1, drop_remainder=False)
  indices = np.concatenate([b["index"] for b in loader])
  np.testing.assert_array_equal(indices, np.arange(len(train)))


def test_each_epoch_is_a_new_permutation(train):
  n = len(train)
  it = iter(make_loader(train, 8, seed=5, num_epochs=2, drop_remainder=False))
  indices = np.concatenate([b["index"] for b in it])
  first, second = indices[:n], indices[n:2 * n]
  np.testing.assert_array_equal(np.sort(first), np.arange(n))
  np.testing.assert_array_equal(np.sort(second), np.arange(n))
  assert not np.array_equal(first, second)
  other_seed = next(iter(make_loader(train, 8, seed=6)))["index"]
  assert not np.array_equal(other_seed, indices[:8])


def test_shards_are_disjoint_and_complete(train):
  parts = [np.concatenate([b["index"] for b in make_loader(
      train, 64, shard_index=i, shard_count=3, num_epochs=1, drop_remainder=False)])
           for i in range(3)]
  union = np.concatenate(parts)
  assert len(union) == len(train) and len(np.unique(union)) == len(train)


def test_state_round_trip_in_process(train):
  it = iter(make_loader(train, 16, seed=2))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  restored = iter(make_loader(train, 16, seed=2))
  restored.set_state(state)
  assert_batches_equal([next(restored) for _ in range(4)], expected)


@pytest.mark.slow
def test_state_round_trip_with_worker_processes(train):
  loader = make_loader(train, 16, seed=4, worker_count=2)
  it = iter(loader)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  restored = iter(make_loader(train, 16, seed=4, worker_count=2))
  restored.set_state(state)
  assert_batches_equal([next(restored) for _ in range(3)], expected)
  reference = iter(make_loader(train, 16, seed=4, worker_count=0))
  assert_batches_equal([next(reference) for _ in range(8)][5:], expected)
