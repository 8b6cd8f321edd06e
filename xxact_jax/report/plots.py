"""Report figures as functions of arrays; each writes one PNG.

Uses matplotlib's object API with the Agg canvas, so no global backend or
display is touched.
"""

import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xxact_jax import constants

_DPI = 150


def _save(figure: Figure, path: str) -> str:
  FigureCanvasAgg(figure)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=_DPI)
  return path


def _colours(count: int):
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  cmap = colormaps["tab10"]
  return [cmap(i % 10) for i in range(count)]


def plot_pca(coords: np.ndarray, labels: np.ndarray, class_names, explained: np.ndarray,
             path: str, title: str = "", silhouette: float | None = None) -> str:
  """2-D PCA scatter coloured by class (paper Fig. 2)."""
  figure = Figure(figsize=(8.2, 5.6))
  ax = figure.add_subplot()
  colours = _colours(len(class_names))
  size = float(np.clip(4000.0 / max(len(coords), 1), 4.0, 24.0))  # bigger dots when few
  for index, name in enumerate(class_names):
    members = labels == index
    if members.any():
      ax.scatter(coords[members, 0], coords[members, 1], s=size, alpha=0.6,
                 color=colours[index], label=f"{name} ({int(members.sum())})",
                 edgecolors="none")
  ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f} % of variance)")
  ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f} % of variance)")
  heading = title or "PCA of embeddings"
  if silhouette is not None:
    heading += f"\nmean silhouette {silhouette:.3f}"
  ax.set_title(heading)
  # Outside the axes: inside ("best") it still hid the points of crowded plots.
  legend = ax.legend(title="crystal system", fontsize=8, markerscale=2.5, loc="upper left",
                     bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
  for handle in legend.legend_handles:
    handle.set_alpha(1.0)
  return _save(figure, path)


def plot_confusion(matrix: np.ndarray, class_names, path: str, title: str = "") -> str:
  """Row-normalised confusion matrix with counts annotated."""
  figure = Figure(figsize=(7.0, 6.0))
  ax = figure.add_subplot()
  support = matrix.sum(axis=1, keepdims=True)
  normalised = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
  image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
  colourbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  colourbar.set_label("fraction of true class")
  ticks = np.arange(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=45, ha="right")
  ax.set_yticks(ticks, class_names)
  ax.set_xlabel("predicted crystal system")
  ax.set_ylabel("true crystal system")
  for i in range(matrix.shape[0]):
    for j in range(matrix.shape[1]):
      if matrix[i, j]:
        ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black")
  ax.set_title(title or "Confusion matrix")
  return _save(figure, path)


def plot_per_class_accuracy(accuracies: np.ndarray, class_names, counts, path: str,
                            title: str = "") -> str:
  """Bar chart of accuracy per class (paper Table 4)."""
  figure = Figure(figsize=(7.0, 4.2))
  ax = figure.add_subplot()
  positions = np.arange(len(class_names))
  values = np.nan_to_num(100 * np.asarray(accuracies, dtype=np.float64))
  bars = ax.bar(positions, values, color=_colours(len(class_names)))
  for bar, count, value in zip(bars, counts, accuracies):
    text = "n/a" if not np.isfinite(value) else f"{100 * value:.1f}"
    ax.annotate(f"{text}\n(n={int(count)})", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center", va="bottom", fontsize=7)
  ax.set_xticks(positions, class_names, rotation=30, ha="right")
  ax.set_ylabel("accuracy (%)")
  ax.set_xlabel("true crystal system")
  ax.set_ylim(0, 115)
  ax.set_title(title or "Accuracy per crystal system")
  return _save(figure, path)


def plot_parity(true: np.ndarray, predicted: np.ndarray, target: str, unit: str,
                scores: dict, path: str) -> str:
  """Predicted vs. reference values with the y = x line."""
  keep = np.isfinite(true) & np.isfinite(predicted)
  true, predicted = true[keep], predicted[keep]
  figure = Figure(figsize=(5.6, 5.4))
  ax = figure.add_subplot()
  label = (f"{scores['count']} samples\nMAE {scores['mae']:.3f} {unit}\n"
           f"RMSE {scores['rmse']:.3f} {unit}\nR² {scores['r2']:.3f}")
  ax.scatter(true, predicted, s=6, alpha=0.5, edgecolors="none", label=label)
  values = np.concatenate([true, predicted]) if true.size else np.array([0.0, 1.0])
  low, high = float(values.min()), float(values.max())
  margin = 0.05 * (high - low or 1.0)
  bounds = (low - margin, high + margin)
  ax.plot(bounds, bounds, color="black", linewidth=1, linestyle="--", label="y = x")
  ax.set_xlim(bounds)
  ax.set_ylim(bounds)
  ax.set_aspect("equal")
  name = target.replace("_", " ")
  ax.set_xlabel(f"reference {name} ({unit})")
  ax.set_ylabel(f"predicted {name} ({unit})")
  ax.set_title(f"Parity: {name}")
  ax.legend(loc="upper left", fontsize=8)
  return _save(figure, path)


def _metric_label(metric: str) -> str:
  """An axis label with the unit of MAE metrics (eval/band_gap_mae -> "band gap MAE (eV)")."""
  name = metric.rsplit("/", 1)[-1]
  for target, unit in constants.TARGET_UNITS.items():
    if name == f"{target}_mae":
      return f"{target.replace('_', ' ')} MAE ({unit})"
  return name.replace("_", " ")


def merge_identical_series(lines: dict) -> dict:
  """{name: (steps, values)} with the series that coincide point for point (e.g. several classes
  at 0 % accuracy throughout) drawn once, their names joined with " = " in the label; each line
  would otherwise hide the ones drawn before it."""
  merged = {}
  for name, (steps, values) in lines.items():
    key = (tuple(np.asarray(steps).tolist()), tuple(np.asarray(values, float).round(12).tolist()))
    merged.setdefault(key, []).append(name)
  return {" = ".join(names): (np.asarray(key[0]), np.asarray(key[1]))
          for key, names in merged.items()}


def plot_learning_curves(panels: dict, path: str) -> str:
  """One panel per metric group: {title: {series name: (steps, values)}}."""
  panels = {title: lines for title, lines in panels.items() if lines}
  if not panels:
    raise ValueError("no metric series to plot")
  columns = min(2, len(panels))
  rows = math.ceil(len(panels) / columns)
  figure = Figure(figsize=(6.0 * columns, 3.8 * rows))
  for index, (title, lines) in enumerate(panels.items()):
    ax = figure.add_subplot(rows, columns, index + 1)
    for name, (steps, values) in merge_identical_series(lines).items():
      ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel(_metric_label(title))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return _save(figure, path)


def plot_convergence(metric: str, runs: list, threshold: float, path: str) -> str:
  """Validation curves of several runs, the threshold, and where each first reaches it.

  runs: [(name, steps, values, reach_step or None)].
  """
  figure = Figure(figsize=(7.0, 4.6))
  ax = figure.add_subplot()
  for (name, steps, values, reach), colour in zip(runs, _colours(len(runs))):
    ax.plot(steps, values, color=colour, label=name, marker="o" if len(steps) < 30 else None,
            markersize=3)
    if reach is not None:
      ax.axvline(reach, color=colour, linestyle=":", linewidth=1)
  ax.axhline(threshold, color="black", linestyle="--", linewidth=1,
             label=f"threshold {threshold:.4g}")
  ax.set_xlabel("training step")
  ax.set_ylabel(metric)
  ax.set_title(f"Convergence: {metric}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(figure, path)
