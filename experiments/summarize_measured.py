r"""Tables the runs of experiments/measured.sh: measured accuracy (all scans and by source), the
simulated test split at the evaluated checkpoint, and the majority-class rate.

  python experiments/summarize_measured.py OUT

Reads OUT/summary.jsonl (one `evaluate` metrics line per run and preprocessing option, with
`run` and `preprocessing` added), each run's OUT/<run>/metrics.jsonl and the predictions under
OUT/eval/; writes OUT/summary.md and prints it, and OUT/tradeoff.png: measured against simulated
accuracy for every run scored both alone ("none") and with the reference and indexing.
"""

import collections
import json
import os
import sys


def source_of(scan_id: str) -> str:
  """The dev set's ids start with their source: rruff_, iucr_, crystalyze_."""
  return scan_id.split("_", 1)[0]


def simulated_accuracy(workdir: str, step: int) -> float | None:
  """eval/crystal_system_accuracy of `workdir` at `step` (the checkpoint evaluated)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  found = None
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get("step") == step and "eval/crystal_system_accuracy" in record:
        found = record["eval/crystal_system_accuracy"]
  return found


def accuracy_by_source(predictions_path: str) -> dict[str, tuple[int, int]]:
  counts = collections.defaultdict(lambda: [0, 0])
  with open(predictions_path) as f:
    for line in f:
      record = json.loads(line)
      label = record.get("label", {}).get("crystal_system")
      if "error" in record or not label:
        continue
      for key in ("all", source_of(record["id"])):
        counts[key][0] += record["crystal_system"] == label
        counts[key][1] += 1
  return {k: tuple(v) for k, v in counts.items()}


def main(out: str) -> str:
  rows = [json.loads(line) for line in open(os.path.join(out, "summary.jsonl")) if line.strip()]
  sources = ("rruff", "iucr", "crystalyze")
  header = ("| run | preprocessing | measured, all | " + " | ".join(sources)
            + " | top-5 | simulated test | majority |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for m in rows:
    predictions = os.path.join(out, "eval", m["run"], m["preprocessing"].replace(",", "_"),
                               "predictions.jsonl")
    by_source = accuracy_by_source(predictions)
    cells = []
    for key in sources:
      right, total = by_source.get(key, (0, 0))
      cells.append(f"{right / total:.1%} ({total})" if total else "–")
    simulated = simulated_accuracy(os.path.join(out, m["run"]), m["step"])
    lines.append(
        f"| {m['run']} | {m['preprocessing']} | **{m['crystal_system_accuracy']:.1%}** | "
        + " | ".join(cells)
        + f" | {m['crystal_system_top5_accuracy']:.1%} | "
        + (f"{simulated:.1%}" if simulated is not None else "–")
        + f" | {m['crystal_system_majority_rate']:.1%} |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
  plot_tradeoff(rows, out)
  print(text)
  return text


ALONE, IDENTIFIED = "none", "none,reference,indexing"


def tradeoff_points(rows, out: str) -> list[tuple[str, float, float, float]]:
  """(run, simulated test accuracy, measured alone, measured with reference and indexing) of the
  runs scored both ways and with a simulated figure at the evaluated step."""
  by_run = collections.defaultdict(dict)
  for m in rows:
    by_run[m["run"]][m["preprocessing"]] = m
  points = []
  for run, scored in by_run.items():
    if ALONE in scored and IDENTIFIED in scored:
      simulated = simulated_accuracy(os.path.join(out, run), scored[ALONE]["step"])
      if simulated is not None:
        points.append((run, simulated, scored[ALONE]["crystal_system_accuracy"],
                       scored[IDENTIFIED]["crystal_system_accuracy"]))
  return points


def plot_tradeoff(rows, out: str) -> str | None:
  """OUT/tradeoff.png, or None when no run has all three figures."""
  points = tradeoff_points(rows, out)
  if not points:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 5))
  for run, simulated, alone, identified in points:
    ax.plot([100 * simulated] * 2, [100 * alone, 100 * identified], color="0.8", zorder=1)
    ax.scatter(100 * simulated, 100 * alone, facecolors="none", edgecolors="C0", zorder=2)
    ax.scatter(100 * simulated, 100 * identified, color="C1", zorder=2)
    ax.annotate(run, (100 * simulated, 100 * identified), fontsize=7,
                xytext=(3, 3), textcoords="offset points")
  ax.scatter([], [], facecolors="none", edgecolors="C0", label="model alone")
  ax.scatter([], [], color="C1", label="+ reference + indexing")
  ax.set_xlabel("simulated test split, crystal-system accuracy (%)")
  ax.set_ylabel("measured scans, crystal-system accuracy (%)")
  ax.legend(loc="lower left")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(out, "tradeoff.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
