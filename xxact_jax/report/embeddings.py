"""Embedding analysis: 2-D PCA and silhouette scores per class (paper Fig. 2, Table 5)."""

import numpy as np
from sklearn import decomposition
from sklearn import metrics as sk_metrics


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(coordinates [N, 2], explained-variance ratio [2]) of [N, D] embeddings on their first two
  principal components (scikit-learn's PCA). Each component's largest-magnitude loading is made
  positive, which keeps plots stable across runs."""
  x = np.asarray(embeddings, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"pca_2d needs [N >= 2, D] embeddings, got shape {x.shape}")
  n = min(2, *x.shape)
  pca = decomposition.PCA(n_components=n, svd_solver="full").fit(x)
  components = pca.components_
  signs = np.sign(components[np.arange(n), np.argmax(np.abs(components), axis=1)])
  signs[signs == 0] = 1.0
  coords = (x - pca.mean_) @ (components * signs[:, None]).T
  ratio = np.nan_to_num(pca.explained_variance_ratio_)
  if n < 2:  # one-dimensional embeddings: pad the second axis
    coords = np.pad(coords, ((0, 0), (0, 2 - n)))
    ratio = np.pad(ratio, (0, 2 - n))
  return coords, ratio


def silhouette_samples(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Euclidean silhouette coefficient of every sample (scikit-learn's): s = (b - a) / max(a, b),
  a the mean distance to the other members of the sample's class, b the smallest mean distance
  to another class; samples alone in their class get 0."""
  x = np.asarray(x, dtype=np.float64)
  labels = np.asarray(labels)
  num_classes = np.unique(labels).size
  if num_classes < 2:
    raise ValueError("silhouette needs at least two classes")
  if num_classes == len(labels):        # every sample alone in its class
    return np.zeros(len(labels))
  return sk_metrics.silhouette_samples(x, labels, metric="euclidean")


def silhouette_by_class(x: np.ndarray, labels: np.ndarray,
                        class_names=None) -> dict:
  """{"per_class": {name: score}, "mean": float, "counts": {name: n}}: the mean silhouette per
  class that occurs in `labels` (named `class_names[label]`) and over all samples."""
  labels = np.asarray(labels)
  scores = silhouette_samples(x, labels)
  per_class, counts = {}, {}
  for label in np.unique(labels):
    name = class_names[int(label)] if class_names is not None else str(label)
    members = labels == label
    per_class[name] = float(scores[members].mean())
    counts[name] = int(members.sum())
  return {"per_class": per_class, "mean": float(scores.mean()), "counts": counts}
