"""Dataset.read_batch returns rows in the order asked, whatever that order is."""

import numpy as np

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
