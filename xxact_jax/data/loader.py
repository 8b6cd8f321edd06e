"""Grain pipeline over a Dataset: vectorised per-epoch index batches -> read_batch.

Grain's element-wise MapDataset.shuffle + batch costs ~50 µs of Python per row
(≈15 ms per 256-row batch on 2 cores), more than the TensorStore read itself, so
index batches come from one numpy permutation per epoch instead. Element i of the
pipeline is batch i, so the Grain iterator state (the next batch number) restores
exactly.

Every process computes the same permutation and takes its contiguous part of each
global batch, so a global batch (the parts in process order) holds the same rows for
any number of processes, and every process has the same number of batches per epoch.
"""

import functools
import os

from absl import flags
import grain
import numpy as np

from xxact_jax.data import dataset as dataset_lib
from xxact_jax.data import processes

_UNBOUNDED = 2 ** 62   # length of an endless (num_epochs=None) sequence of batches


class IndexBatches:
  """Sequence of index arrays: this shard's part of each global batch of a per-epoch permutation.

  The permutation of all rows comes from (seed, epoch); global batch j is its rows
  [j * G, (j + 1) * G) with G = batch_size * shard_count, and shard i takes the i-th of
  shard_count contiguous parts (a short last batch is split as evenly as it goes).
  """

  def __init__(self, num_rows: int, batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, shard_index: int, shard_count: int,
               drop_remainder: bool):
    self._rows = np.arange(num_rows, dtype=np.int64)
    self._seed, self._shuffle = seed, shuffle
    self._shard_index, self._shard_count = shard_index, shard_count
    self._global_batch = batch_size * shard_count
    self._per_epoch = (num_rows // self._global_batch if drop_remainder
                       else -(-num_rows // self._global_batch))
    self._length = (_UNBOUNDED if num_epochs is None else num_epochs * self._per_epoch)
    self._cached = (-1, None)    # (epoch, order), swapped as one tuple: reader threads share it

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_cached"] = (-1, None)   # workers recompute the permutation instead of unpickling it
    return state

  def __len__(self) -> int:
    return self._length

  def _epoch_order(self, epoch: int) -> np.ndarray:
    cached_epoch, order = self._cached
    if cached_epoch != epoch:
      order = (np.random.default_rng([self._seed, epoch]).permutation(self._rows)
               if self._shuffle else self._rows)
      self._cached = (epoch, order)
    return order

  def __getitem__(self, i: int) -> np.ndarray:
    if not 0 <= i < self._length:
      raise IndexError(f"batch {i} out of range ({self._length} batches).")
    epoch, j = divmod(i, self._per_epoch)
    start = j * self._global_batch
    rows = self._epoch_order(epoch)[start:start + self._global_batch]
    return np.array_split(rows, self._shard_count)[self._shard_index]


def make_loader(ds: dataset_lib.Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
                worker_count: int = 0, drop_remainder: bool = True, read_threads: int = 2,
                prefetch_batches: int = 4, fields=None) -> grain.IterDataset:
  """A Grain IterDataset of batch dicts; `iter()` gives a checkpointable iterator.

  Batches (batch_size rows per process) are IndexBatches of a per-epoch permutation from `seed`
  (row order without `shuffle`; forever when num_epochs is None), so batch i covers the same
  rows for any process count; each is one `ds.read_batch` call (one TensorStore read per array).
  worker_count > 0 runs the reads in that many worker processes; the iterator state
  round-trips through get_state/set_state in both modes. `fields`: the arrays read
  (ds.read_batch's; None: its default), names that are not arrays (e.g. "index") left out.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, shard_count={shard_count}).")
  batches = IndexBatches(len(ds), batch_size, seed, shuffle, num_epochs, shard_index,
                         shard_count, drop_remainder)
  if batches._per_epoch == 0:  # pylint: disable=protected-access
    raise ValueError(f"{ds!r} has fewer rows than one global batch of {shard_count} x "
                     f"{batch_size} (drop_remainder={drop_remainder}).")
  read = ds.read_batch
  if fields is not None:
    read = functools.partial(ds.read_batch, fields=tuple(
        f for f in fields if f in dataset_lib.READABLE_FIELDS))
  pipeline = grain.MapDataset.source(batches).map(read).to_iter_dataset(
      grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
  if worker_count > 0:
    # Grain's worker processes read absl flags; outside an absl app they are unparsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    # Grain starts its workers with "spawn" (no fork of this JAX-threaded process); each dies
    # with this process, so a SIGKILL of the trainer leaves no orphans holding its stdout.
    pipeline = pipeline.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=worker_count),
        worker_init_fn=functools.partial(processes.grain_worker_init, os.getpid()))
  return pipeline
