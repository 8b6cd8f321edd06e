"""summary.md: the report's numbers as Markdown tables."""

import numpy as np

from xxact_jax import constants
from xxact_jax.report import curves


def _number(value, digits=4):
  return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def render(results: dict, records, header: dict, figures: list[str],
           embedding_names: dict | None = None) -> str:
  """summary.md; `embedding_names` ({output key: what it is}) heads the silhouette columns."""
  embedding_names = embedding_names or {}
  lines = ["# XxaCT-NN evaluation report", ""]
  for key, value in header.items():
    lines.append(f"- **{key}**: {value}")
  lines.append(f"- **samples evaluated**: {results['num_samples']}")
  lines.append("")

  if results["regression"]:
    lines += ["## Regression", "", "| target | unit | samples | MAE | RMSE | R² |",
              "|---|---|---|---|---|---|"]
    for target, s in results["regression"].items():
      lines.append(f"| {target} | {constants.TARGET_UNITS[target]} | {s['count']} | "
                   f"{_number(s['mae'])} | {_number(s['rmse'])} | {_number(s['r2'])} |")
    lines.append("")

  if results["classification"]:
    lines += ["## Classification", "", "| target | samples | accuracy (%) | top-5 accuracy (%) |",
              "|---|---|---|---|"]
    for target, s in results["classification"].items():
      lines.append(f"| {target} | {s['count']} | {_number(100 * s['accuracy'], 2)} | "
                   f"{_number(100 * s['top5_accuracy'], 2)} |")
    lines.append("")
  if "crystal_system" in results["classification"]:
    s = results["classification"]["crystal_system"]
    support = s["confusion"].sum(axis=1)
    lines += ["### Accuracy per crystal system (Table 4)", "",
              "| crystal system | samples | accuracy (%) |", "|---|---|---|"]
    for name, count, value in zip(constants.CRYSTAL_SYSTEMS, support, s["per_class"]):
      lines.append(f"| {name} | {int(count)} | {_number(100 * value, 2)} |")
    lines.append("")

  if results["silhouette"]:
    keys = list(results["silhouette"])
    columns = [(embedding_names.get(key, key), results["silhouette"][key]) for key in keys]
    columns.append(("2-D PCA of model embedding", results["silhouette_pca"]))
    n = len(results.get("embedding_indices", []))
    lines += ["## Silhouette scores per crystal system (Table 5)", "",
              f"Euclidean silhouette over {n} labelled samples, by true crystal system; "
              "the mean is over samples (scikit-learn's silhouette_score).", "",
              "| crystal system | samples | " + " | ".join(c[0] for c in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    counts = columns[0][1]["counts"]
    for name in constants.CRYSTAL_SYSTEMS:
      if name in counts:
        lines.append(f"| {name} | {counts[name]} | "
                     + " | ".join(_number(c[1]["per_class"][name]) for c in columns) + " |")
    lines.append(f"| **mean** | {sum(counts.values())} | "
                 + " | ".join(f"**{_number(c[1]['mean'])}**" for c in columns) + " |")
    lines.append("")

  if records:
    final = {}
    for key in curves.metric_keys(records):
      if key.startswith("eval/"):
        steps, values = curves.series(records, key)
        final[key] = (int(steps[-1]), values[-1])
    if final:
      lines += ["## Last logged evaluation (metrics.jsonl)", "", "| metric | step | value |",
                "|---|---|---|"]
      lines += [f"| {k} | {step} | {_number(v)} |" for k, (step, v) in final.items()]
      lines.append("")

  if figures:
    lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
  return "\n".join(lines)
