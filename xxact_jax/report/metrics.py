"""Classification and regression scores computed from arrays (paper Table 4, parity plots),
with scikit-learn's definitions."""

import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """[num_classes, num_classes] counts; rows are true classes, columns predictions."""
  true = np.asarray(true, dtype=np.int64)
  predicted = np.asarray(predicted, dtype=np.int64)
  for name, values in (("true", true), ("predicted", predicted)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f"{name} labels must lie in [0, {num_classes}), got "
                       f"[{values.min()}, {values.max()}]")
  return np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes).reshape(
      num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
  """Fraction of each true class predicted correctly (recall); NaN for absent classes."""
  support = matrix.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)


def accuracy(matrix: np.ndarray) -> float:
  total = matrix.sum()
  return float(np.trace(matrix) / total) if total else float("nan")


def regression_scores(true: np.ndarray, predicted: np.ndarray) -> dict:
  """MAE, RMSE and R² over the finite labels."""
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  true = np.asarray(true, dtype=np.float64)
  predicted = np.asarray(predicted, dtype=np.float64)
  keep = np.isfinite(true) & np.isfinite(predicted)
  true, predicted = true[keep], predicted[keep]
  if true.size == 0:
    return {"count": 0, "mae": float("nan"), "rmse": float("nan"), "r2": float("nan")}
  # R² of a constant label is undefined (scikit-learn would report 0 or 1).
  r2 = sk_metrics.r2_score(true, predicted) if np.ptp(true) > 0 else float("nan")
  return {"count": int(true.size), "mae": float(sk_metrics.mean_absolute_error(true, predicted)),
          "rmse": float(np.sqrt(sk_metrics.mean_squared_error(true, predicted))),
          "r2": float(r2)}
