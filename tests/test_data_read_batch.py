"""Dataset.read_batch returns rows in the order asked, whatever that order is; fractions of a
split."""

import numpy as np
import pytest

from xxact_jax.data import open_dataset


def test_read_batch_orders_match_single_rows(embedded_dataset):
  ds = open_dataset(embedded_dataset, "train")
  increasing = np.array([3, 10, 11, 500, 899])
  orders = {"increasing": increasing, "reversed": increasing[::-1],
            "shuffled": np.array([500, 3, 899, 11, 10]), "duplicates": np.array([11, 3, 11, 3]),
            "negative": np.array([-1, 0, -2])}
  for label, indices in orders.items():
    batch = ds.read_batch(indices)
    np.testing.assert_array_equal(batch["index"], np.where(indices < 0, indices + len(ds),
                                                           indices), err_msg=label)
    for position, i in enumerate(indices):
      record = ds[int(i)]
      for key in ("xrd", "species", "fractions", "spacegroup_number"):
        np.testing.assert_array_equal(batch[key][position], record[key], err_msg=(label, key))


def test_fraction_of_a_split_is_random_reproducible_and_inside_it(embedded_dataset):
  train = open_dataset(embedded_dataset, "train")
  tenth = train.fraction(0.1, seed=3)
  assert len(tenth) == round(0.1 * len(train))
  assert set(tenth.rows) <= set(train.rows) and (np.diff(tenth.rows) > 0).all()
  np.testing.assert_array_equal(tenth.rows, train.fraction(0.1, seed=3).rows)
  assert not np.array_equal(tenth.rows, train.fraction(0.1, seed=4).rows)
  assert not np.array_equal(tenth.rows, train.rows[:len(tenth)])      # not the first rows
  np.testing.assert_array_equal(train.fraction(1.0).rows, train.rows)
  with pytest.raises(ValueError, match="fraction"):
    train.fraction(0.0)


def test_read_batch_fields_reads_only_those(embedded_dataset):
  ds = open_dataset(embedded_dataset, "test")
  full = ds.read_batch([3, 1])
  some = ds.read_batch([3, 1], fields=("species", "spacegroup_number"))
  assert set(some) == {"species", "spacegroup_number", "index"}
  np.testing.assert_array_equal(some["species"], full["species"])
  np.testing.assert_array_equal(some["spacegroup_number"], full["spacegroup_number"])
  with pytest.raises(ValueError, match="Unknown batch fields"):
    ds.read_batch([0], fields=("xrd", "formula"))
