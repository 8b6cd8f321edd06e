"""Convergence comparison of several runs (paper Sec. 4.2, the 4.2x speed-up).

  python -m xxact_jax.report.compare BASELINE_DIR PRETRAINED_DIR ... \
      [--metric=eval/formation_energy_per_atom_mae] [--fraction=0.25] [--threshold=X]

The threshold defaults to the first run's metric at `fraction` of its
training; for each run the report gives the first evaluated step at which the
metric reaches the threshold, and the speed-up relative to the first run.
"""

import json
import os
import sys

from absl import flags
import numpy as np

from xxact_jax import cli
from xxact_jax.inference.errors import InputError
from xxact_jax.report import curves
from xxact_jax.report import plots

DEFAULT_METRICS = ("eval/formation_energy_per_atom_mae", "eval/crystal_system_accuracy")


def compare(workdirs: list[str], metric: str, fraction: float = 0.25,
            threshold: float | None = None, names: list[str] | None = None) -> dict:
  """Threshold, steps to reach it and speed-up versus the first run, for one metric."""
  names = names or [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  lower = curves.lower_is_better(metric)
  runs = []
  for name, workdir in zip(names, workdirs):
    records = curves.read_metrics(workdir)
    steps, values = curves.series(records, metric)
    if steps.size == 0:
      raise InputError(f"metric {metric!r} never logged; logged metrics: "
                       + ", ".join(curves.metric_keys(records)),
                       path=os.path.join(workdir, "metrics.jsonl"))
    # The planned training length: config.json's num_train_steps, else the last logged step.
    planned = -1
    if os.path.isfile(os.path.join(workdir, "config.json")):
      with open(os.path.join(workdir, "config.json")) as f:
        try:
          planned = json.load(f).get("num_train_steps", -1)
        except (json.JSONDecodeError, AttributeError):
          pass
    runs.append({"name": name, "workdir": workdir, "steps": steps, "values": values,
                 "total_steps": planned if isinstance(planned, int) and planned > 0
                                else max(int(r["step"]) for r in records)})
  reference = runs[0]
  threshold_step = None
  if threshold is None:   # the evaluation nearest `fraction` of training (the earlier on ties)
    index = int(np.argmin(np.abs(reference["steps"] - fraction * reference["total_steps"])))
    threshold_step, threshold = int(reference["steps"][index]), float(reference["values"][index])
  for run in runs:   # the first evaluated step that meets the threshold, the reference first
    hits = np.flatnonzero(run["values"] <= threshold if lower else run["values"] >= threshold)
    reach = run["reach_step"] = int(run["steps"][hits[0]]) if hits.size else None
    run["speedup"] = (reference["reach_step"] / reach
                      if reach and reference["reach_step"] is not None else None)
  return {"metric": metric, "lower_is_better": lower, "threshold": float(threshold),
          "threshold_from": (f"{reference['name']} at step {threshold_step}, its evaluation "
                             f"nearest {fraction:.0%} of {reference['total_steps']} steps"
                             if threshold_step is not None else "given"),
          "runs": runs}


def to_markdown(result: dict) -> str:
  sense = "≤" if result["lower_is_better"] else "≥"
  lines = [f"### {result['metric']}", "",
           f"Threshold: {sense} {result['threshold']:.6g} (from {result['threshold_from']}).", "",
           "| run | steps trained | best value | first step reaching threshold | speed-up vs first run |",
           "|---|---|---|---|---|"]
  for run in result["runs"]:
    best = run["values"].min() if result["lower_is_better"] else run["values"].max()
    reach = run["reach_step"] if run["reach_step"] is not None else "not reached"
    speedup = f"{run['speedup']:.2f}×" if run["speedup"] is not None else "—"
    lines.append(f"| {run['name']} | {int(run['steps'][-1])} | {best:.6g} | {reach} | {speedup} |")
  return "\n".join(lines) + "\n"


FLAGS = flags.FlagValues()
flags.DEFINE_multi_string("metric", None, "Metric key in metrics.jsonl (repeatable); default: "
                          + ", ".join(DEFAULT_METRICS) + " where logged.", flag_values=FLAGS)
flags.DEFINE_float("fraction", 0.25, "Fraction of the first run's training that sets the "
                   "threshold.", flag_values=FLAGS)
flags.DEFINE_float("threshold", None, "Explicit threshold (one --metric only).", flag_values=FLAGS)
flags.DEFINE_string("names", None, "Comma-separated run names for the legend.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Default: FIRST_WORKDIR/report/compare.",
                    flag_values=FLAGS)


def main(argv=None) -> int:
  workdirs = cli.parse(FLAGS, argv, __doc__, positional=True) or cli.fail(
      "give the run workdirs to compare; the first is the reference")
  try:
    names = FLAGS.names.split(",") if FLAGS.names else None
    if names is not None and len(names) != len(workdirs):
      raise InputError(f"--names has {len(names)} names for {len(workdirs)} workdirs")
    if not 0 < FLAGS.fraction <= 1:
      raise InputError(f"--fraction must lie in (0, 1], got {FLAGS.fraction}")
    metrics = FLAGS.metric
    if metrics is None:
      logged = set(curves.metric_keys(curves.read_metrics(workdirs[0])))
      metrics = [m for m in DEFAULT_METRICS if m in logged]
      if not metrics:
        raise InputError("none of the default metrics is logged; pass --metric "
                         f"(logged: {', '.join(sorted(logged))})",
                         path=os.path.join(workdirs[0], "metrics.jsonl"))
    if FLAGS.threshold is not None and len(metrics) != 1:
      raise InputError("--threshold needs exactly one --metric")
    results = [compare(workdirs, m, FLAGS.fraction, FLAGS.threshold, names) for m in metrics]
  except (InputError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  output_dir = FLAGS.output_dir or os.path.join(workdirs[0], "report", "compare")
  os.makedirs(output_dir, exist_ok=True)
  markdown = ["# Convergence comparison", ""]
  for result in results:
    slug = result["metric"].replace("/", "_")
    plots.plot_convergence(
        result["metric"],
        [(r["name"], r["steps"], r["values"], r["reach_step"]) for r in result["runs"]],
        result["threshold"], os.path.join(output_dir, f"compare_{slug}.png"))
    markdown += [to_markdown(result), f"![{result['metric']}](compare_{slug}.png)", ""]
  text = "\n".join(markdown)
  with open(os.path.join(output_dir, "compare.md"), "w") as f:
    f.write(text)
  with open(os.path.join(output_dir, "compare.json"), "w") as f:
    json.dump([dict(r, runs=[{k: v.tolist() if isinstance(v, np.ndarray) else v
                              for k, v in run.items()} for run in r["runs"]]) for r in results],
              f, indent=2)
  print(text)
  print(f"wrote {output_dir}")
  return 0


if __name__ == "__main__":
  cli.run(main)
