"""Embedding analysis: 2-D PCA and silhouette scores per class (paper Fig. 2, Table 5)."""

import numpy as np


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projects [N, D] embeddings on their first two principal components.

  Returns:
    (coordinates [N, 2], explained-variance ratio [2]). Component signs are
    fixed so that each component's largest-magnitude loading is positive,
    which keeps plots stable across runs.
  """
  x = np.asarray(embeddings, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"pca_2d needs [N >= 2, D] embeddings, got shape {x.shape}")
  centred = x - x.mean(axis=0)
  _, singular, components = np.linalg.svd(centred, full_matrices=False)
  components = components[:2]
  signs = np.sign(components[np.arange(components.shape[0]),
                             np.argmax(np.abs(components), axis=1)])
  components = components * signs[:, None]
  variance = singular ** 2
  ratio = variance[:2] / max(variance.sum(), np.finfo(np.float64).tiny)
  coords = centred @ components.T
  if coords.shape[1] < 2:  # one-dimensional embeddings: pad the second axis
    coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    ratio = np.pad(ratio, (0, 2 - ratio.shape[0]))
  return coords, ratio


def silhouette_samples(x: np.ndarray, labels: np.ndarray,
                       chunk_size: int = 1024) -> np.ndarray:
  """Euclidean silhouette coefficient of every sample (as scikit-learn defines it).

  s = (b - a) / max(a, b), with a the mean distance to the other members of
  the sample's class and b the smallest mean distance to another class;
  samples alone in their class get 0. Distances are computed in row chunks so
  memory stays at chunk_size x N.
  """
  x = np.asarray(x, dtype=np.float64)
  labels = np.asarray(labels)
  classes, codes = np.unique(labels, return_inverse=True)
  if classes.size < 2:
    raise ValueError("silhouette needs at least two classes")
  one_hot = np.eye(classes.size)[codes]                   # [N, C]
  counts = one_hot.sum(axis=0)                            # [C]
  squared_norms = np.einsum("nd,nd->n", x, x)
  scores = np.empty(x.shape[0])
  for start in range(0, x.shape[0], chunk_size):
    rows = slice(start, start + chunk_size)
    squared = squared_norms[rows, None] + squared_norms[None, :] - 2.0 * x[rows] @ x.T
    distances = np.sqrt(np.maximum(squared, 0.0))
    distances[np.arange(distances.shape[0]), np.arange(start, start + distances.shape[0])] = 0.0
    sums = distances @ one_hot                            # [chunk, C]
    own = codes[rows]
    own_count = counts[own] - 1
    a = sums[np.arange(sums.shape[0]), own] / np.maximum(own_count, 1)
    mean_other = sums / counts
    mean_other[np.arange(sums.shape[0]), own] = np.inf
    b = mean_other.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
      s = (b - a) / np.maximum(a, b)
    scores[rows] = np.where(own_count > 0, np.nan_to_num(s), 0.0)
  return scores


def silhouette_by_class(x: np.ndarray, labels: np.ndarray,
                        class_names=None) -> dict:
  """Mean silhouette per class and over all samples.

  Returns:
    {"per_class": {name: score}, "mean": float, "counts": {name: n}} with the
    classes that occur in `labels`; `class_names[label]` names them.
  """
  labels = np.asarray(labels)
  scores = silhouette_samples(x, labels)
  per_class, counts = {}, {}
  for label in np.unique(labels):
    name = class_names[int(label)] if class_names is not None else str(label)
    members = labels == label
    per_class[name] = float(scores[members].mean())
    counts[name] = int(members.sum())
  return {"per_class": per_class, "mean": float(scores.mean()), "counts": counts}
