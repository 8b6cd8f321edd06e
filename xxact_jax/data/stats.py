"""Label statistics over the train split (normalisation and class balance for training)."""

import numpy as np

from xxact_jax import constants
from xxact_jax import targets as targets_lib


def label_stats(columns: dict[str, np.ndarray], train: np.ndarray) -> dict:
  """mean/std/count per regression target; per-class counts per classification target.

  Missing labels (NaN, -1) are left out; mean/std are None without labels. Class counts are
  indexed by class index (targets.py: space group - 1).
  """
  result = {}
  for target in constants.REGRESSION_TARGETS:
    values = columns[target][train].astype(np.float64)
    values = values[np.isfinite(values)]
    result[target] = {"mean": float(values.mean()) if values.size else None,
                      "std": float(values.std()) if values.size else None,
                      "count": int(values.size)}
  for target, num_classes in constants.CLASSIFICATION_TARGETS.items():
    index = targets_lib.get(target).class_index(columns[target][train].astype(np.int64))
    values = index[index >= 0]
    counts = np.bincount(values, minlength=num_classes)[:num_classes]
    result[target] = {"counts": counts.tolist(), "count": int(values.size)}
  return result
