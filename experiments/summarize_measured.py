r"""Tables the runs of experiments/measured.sh: measured accuracy (all scans and by source), the
simulated test split at the evaluated checkpoint, and the majority-class rate.

  python experiments/summarize_measured.py OUT [OUT ...] [--runs=A,B] [--tradeoff=PNG]

Reads OUT/summary.jsonl (one `evaluate` metrics line per run and preprocessing option, with
`run` and `preprocessing` added), each run's OUT/<run>/metrics.jsonl and the predictions under
OUT/eval/; writes OUT/summary.md and prints it. Then a figure (--tradeoff, default
OUT/tradeoff.png of the first OUT): measured against simulated accuracy of every run (or those of
--runs) scored both alone ("none") and with the reference and indexing; a run found in several
OUT directories (one per seed) is drawn at its mean, with bars from its lowest to its highest.
"""

import argparse
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


def table(out: str) -> str:
  rows = read_rows(out)
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
  print(text)
  return text


def read_rows(out: str) -> list[dict]:
  return [json.loads(line) for line in open(os.path.join(out, "summary.jsonl")) if line.strip()]


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


def plot_tradeoff(outs: list[str], path: str, runs=None) -> str | None:
  """The figure of the module docstring at `path`, or None when no run has all three figures."""
  by_run = collections.defaultdict(list)
  for out in outs:
    for run, *figures in tradeoff_points(read_rows(out), out):
      if runs is None or run in runs:
        by_run[run].append([100 * f for f in figures])
  if not by_run:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 5))
  for run, seeds in sorted(by_run.items()):
    values = list(zip(*seeds))    # simulated, alone, identified: one value per seed
    mean = [sum(v) / len(v) for v in values]
    bars = [[[m - min(v)], [max(v) - m]] for m, v in zip(mean, values)]
    ax.plot([mean[0]] * 2, mean[1:], color="0.8", zorder=1)
    ax.errorbar(mean[0], mean[1], xerr=bars[0], yerr=bars[1], fmt="o", mfc="none", color="C0",
                capsize=2, zorder=2)
    ax.errorbar(mean[0], mean[2], xerr=bars[0], yerr=bars[2], fmt="o", color="C1", capsize=2,
                zorder=2)
    label = run + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")
    ax.annotate(label, (mean[0], mean[2]), fontsize=7, xytext=(3, 4), textcoords="offset points",
                rotation=20)
  ax.errorbar([], [], fmt="o", mfc="none", color="C0", label="model alone")
  ax.errorbar([], [], fmt="o", color="C1", label="+ reference + indexing")
  ax.margins(x=0.15, y=0.08)     # room for the labels
  ax.set_xlabel("simulated test split, crystal-system accuracy (%)")
  ax.set_ylabel("measured scans, crystal-system accuracy (%)")
  ax.legend(loc="lower left")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv: list[str]) -> str:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("outs", nargs="+", metavar="OUT")
  parser.add_argument("--runs", default=None, help="comma-separated runs to plot (default: all)")
  parser.add_argument("--tradeoff", default=None, help="the figure's path")
  args = parser.parse_args(argv)
  text = "".join(table(out) for out in args.outs)
  plot_tradeoff(args.outs, args.tradeoff or os.path.join(args.outs[0], "tradeoff.png"),
                None if args.runs is None else set(args.runs.split(",")))
  return text


if __name__ == "__main__":
  main(sys.argv[1:])
