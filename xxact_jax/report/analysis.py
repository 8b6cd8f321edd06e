"""Builds the report (figures + summary.md) from arrays of predictions and labels.

Kept free of the model so it can be checked on synthetic arrays; the CLI in
__main__.py supplies predictions from a checkpoint.
"""

import os

import numpy as np

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.report import curves
from xxact_jax.report import embeddings as embedding_analysis
from xxact_jax.report import markdown_tables
from xxact_jax.report import metrics
from xxact_jax.report import plots


def analyse(outputs: dict, labels: dict, max_embedding_samples: int = 10_000,
            seed: int = 0, embedding_keys=None) -> dict:
  """All report numbers of `outputs` ("embedding" [N, D], the model's other `embedding_keys`,
  by default every output that is not a target, e.g. XxaCT-NN's "comp_cls", and per target
  de-standardised values [N] or logits [N, C]) against `labels` (NaN / -1 = missing). PCA and
  silhouette (O(N²)) use a subset of at most `max_embedding_samples` labelled samples (`seed`)."""
  if embedding_keys is None:
    embedding_keys = [k for k in outputs if k not in constants.ALL_TARGETS]
  results = {"num_samples": int(len(outputs["embedding"])), "regression": {},
             "classification": {}, "silhouette": {}, "parity": {}}
  for target in constants.REGRESSION_TARGETS:
    if target in outputs and target in labels:
      true = np.asarray(labels[target], dtype=np.float64)
      predicted = np.asarray(outputs[target], dtype=np.float64)
      results["regression"][target] = metrics.regression_scores(true, predicted)
      results["parity"][target] = (true, predicted)
  for target, num_classes in constants.CLASSIFICATION_TARGETS.items():
    if target not in outputs or target not in labels:
      continue
    true = targets_lib.get(target).class_index(np.asarray(labels[target]))
    known = true >= 0
    logits = np.asarray(outputs[target])[known]
    predicted = logits.argmax(axis=1)
    matrix = metrics.confusion_matrix(true[known], predicted, num_classes)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    results["classification"][target] = {
        "count": int(known.sum()), "confusion": matrix,
        "accuracy": metrics.accuracy(matrix),
        "top5_accuracy": float(np.mean(np.any(top5 == true[known][:, None], axis=1)))
                         if known.any() else float("nan"),
        "per_class": metrics.per_class_accuracy(matrix)}

  if "crystal_system" in labels:
    systems = np.asarray(labels["crystal_system"])
    chosen = np.flatnonzero(systems >= 0)
    if chosen.size > max_embedding_samples:
      chosen = np.sort(np.random.default_rng(seed).choice(
          chosen, max_embedding_samples, replace=False))
    results["embedding_indices"] = chosen
    if np.unique(systems[chosen]).size >= 2:
      for key in embedding_keys:
        if key in outputs:
          results["silhouette"][key] = embedding_analysis.silhouette_by_class(
              np.asarray(outputs[key])[chosen], systems[chosen], constants.CRYSTAL_SYSTEMS)
      coords, explained = embedding_analysis.pca_2d(np.asarray(outputs["embedding"])[chosen])
      results["pca"] = {"coords": coords, "explained": explained, "labels": systems[chosen]}
      results["silhouette_pca"] = embedding_analysis.silhouette_by_class(
          coords, systems[chosen], constants.CRYSTAL_SYSTEMS)
  return results


def learning_curve_panels(records: list[dict]) -> dict:
  """Groups metrics.jsonl series into panels: {panel title: {series name: (steps, values)}}.

  Training losses share a panel; "eval/<group>/<name>" series (per-target losses, per-class
  accuracies) share their group's panel with the group total; any other eval metric has its own.
  """
  panels = {"training loss": {}}
  for key in curves.metric_keys(records):
    if key.endswith(("num_examples", "_meV")):
      continue
    steps, values = curves.series(records, key)
    parts = key.split("/")
    if parts[0] == "eval":
      group = "/".join(parts[:2])
      name = parts[-1] if len(parts) > 2 else "overall"
      panels.setdefault(group, {})[name] = (steps, values)
    elif "loss" in key:
      panels["training loss"][key] = (steps, values)
  return panels


def write_report(results: dict, records: list[dict] | None, out_dir: str,
                 header: dict, embedding_names: dict | None = None) -> list[str]:
  """Writes every PNG and summary.md into out_dir; returns the files written. `embedding_names`
  ({output key: what it is}, the model's `embeddings`, e.g. "embedding": "fused [CLS]") titles
  the PCA and the silhouette table; an embedding without a name is called by its key."""
  embedding_names = embedding_names or {}
  embedding_name = embedding_names.get("embedding", "model")
  os.makedirs(out_dir, exist_ok=True)
  written = []
  path = lambda name: os.path.join(out_dir, name)
  if "pca" in results:
    pca = results["pca"]
    written.append(plots.plot_pca(
        pca["coords"], pca["labels"], constants.CRYSTAL_SYSTEMS, pca["explained"],
        path("pca_embedding.png"), title=f"PCA of {embedding_name} embeddings",
        silhouette=results["silhouette"]["embedding"]["mean"]))
  scores = results["classification"].get("crystal_system")
  if scores is not None:
    written.append(plots.plot_confusion(scores["confusion"], constants.CRYSTAL_SYSTEMS,
                                        path("confusion_crystal_system.png")))
    written.append(plots.plot_per_class_accuracy(
        scores["per_class"], constants.CRYSTAL_SYSTEMS, scores["confusion"].sum(axis=1),
        path("accuracy_per_crystal_system.png")))
  for target, scores in results["regression"].items():
    written.append(plots.plot_parity(
        np.asarray(results["parity"][target][0]), np.asarray(results["parity"][target][1]),
        target, constants.TARGET_UNITS[target], scores, path(f"parity_{target}.png")))
  if records:
    panels = learning_curve_panels(records)
    if any(panels.values()):
      written.append(plots.plot_learning_curves(panels, path("learning_curves.png")))
  summary_path = path("summary.md")
  with open(summary_path, "w") as f:
    f.write(markdown_tables.render(results, records, header,
                                   [os.path.basename(p) for p in written], embedding_names))
  return written + [summary_path]
