"""Label statistics over the train split (normalisation and class balance for training)."""

import numpy as np

from xxact_jax import constants


def label_stats(columns: dict[str, np.ndarray], train: np.ndarray) -> dict:
  """mean/std/count per regression target; per-class counts per classification target.

  Missing labels (NaN, -1) are left out; mean/std are None without labels. Spacegroup counts are indexed by `sg - 1`.
  """
  result = {}
  for target in constants.REGRESSION_TARGETS:
    values = columns[target][train].astype(np.float64)
    values = values[np.isfinite(values)]
    result[target] = {"mean": float(values.mean()) if values.size else None,
                      "std": float(values.std()) if values.size else None,
                      "count": int(values.size)}
  for target, num_classes in constants.CLASSIFICATION_TARGETS.items():
    values = columns[target][train].astype(np.int64)
    offset = 1 if target == "spacegroup_number" else 0
    values = values[values >= offset] - offset
    counts = np.bincount(values, minlength=num_classes)[:num_classes]
    result[target] = {"counts": counts.tolist(), "count": int(values.size)}
  return result
