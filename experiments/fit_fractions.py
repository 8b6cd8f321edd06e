r"""Error against training-set size (the paper's Fig. 3) from the runs of data_fractions.sh.

  python experiments/fit_fractions.py OUT

Every OUT/<model>_multi[_finetuned][_fraction<F>]/ run gives a point: its training rows (the
fraction of the train split it saw) and its last evaluation's formation-energy MAE and
crystal-system error (1 − accuracy). For each model with at least two sizes, a power law
error = a · N^b is fitted by least squares in log-log; the exponent b says how fast the error
falls with data. Writes OUT/fractions.md, OUT/fractions.json and OUT/fractions.png.
"""

import json
import os
import re
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize_runs  # pylint: disable=g-import-not-at-top,wrong-import-position

RUN = re.compile(r"^(?P<model>[a-z_]+?_multi(?:_finetuned)?)(?:_fraction[0-9.]+)?$")
# (metrics.jsonl key, summarize_runs row key, title)
METRICS = (("eval/formation_energy_per_atom_mae_meV", "fe_mae_meV",
            "formation-energy MAE (meV/atom)"),
           ("eval/crystal_system_accuracy", "cs_accuracy", "crystal-system error (1 − accuracy)"))


def collect(out: str) -> tuple[dict, str | None]:
  """({model: [(fraction of the train split, {metric: error})]} sorted by fraction, the runs'
  dataset path). A run counts once finished (OUT/<run>/done) and evaluated."""
  points, data_path = {}, None
  for name in sorted(os.listdir(out)):
    match = RUN.match(name)
    path = os.path.join(out, name)
    if not match or not os.path.exists(os.path.join(path, "done")):
      continue
    row = summarize_runs.summarize_run(path)
    if not row["steps"]:
      continue
    data = json.load(open(os.path.join(path, "config.json")))["data"]
    data_path = data_path or data.get("path")
    values = {key: (1.0 - row[field] if field == "cs_accuracy" else row[field])
              for key, field, _ in METRICS if row.get(field) is not None}
    points.setdefault(match["model"], []).append((float(data.get("train_fraction", 1.0)), values))
  return {m: sorted(p, key=lambda x: x[0]) for m, p in points.items()}, data_path


def power_law(sizes, errors):
  """(a, b) of error = a · size^b, least squares in log-log."""
  b, log_a = np.polyfit(np.log(sizes), np.log(errors), 1)
  return float(np.exp(log_a)), float(b)


def main(argv=None):
  out = (argv or sys.argv[1:])[0]
  points, data_path = collect(out)
  if not points:
    raise SystemExit(f"no finished *_multi runs under {out}")
  meta = os.path.join(data_path or "", "metadata.json")
  train_total = json.load(open(meta))["splits"]["train"] if os.path.exists(meta) else None
  result = {"train_rows_full": train_total, "models": {}}
  figure, axes = plt.subplots(1, len(METRICS), figsize=(5.5 * len(METRICS), 4.2))
  lines = ["| model | fraction | training rows | " + " | ".join(t for _, _, t in METRICS) + " |",
           "|---|---|---|" + "---|" * len(METRICS)]
  for model, entries in points.items():
    rows = [round(f * train_total) if train_total else f for f, _ in entries]
    model_result = {"points": [{"fraction": f, "train_rows": r, **v}
                               for (f, v), r in zip(entries, rows)], "fits": {}}
    for (f, v), r in zip(entries, rows):
      lines.append(f"| {model} | {f:g} | {r} | " + " | ".join(
          (f"{v[k]:.1f}" if k.endswith("meV") else f"{100 * v[k]:.1f} %") if k in v else "–"
          for k, _, _ in METRICS) + " |")
    for ax, (key, _, title) in zip(axes, METRICS):
      xs = np.array([r for (_, v), r in zip(entries, rows) if key in v], float)
      ys = np.array([v[key] for _, v in entries if key in v], float)
      if not len(xs):
        continue
      handle = ax.loglog(xs, ys, "o", label=model)[0]
      if len(xs) >= 2:
        a, b = power_law(xs, ys)
        model_result["fits"][key] = {"a": a, "b": b}
        grid = np.geomspace(xs.min(), xs.max(), 20)
        ax.loglog(grid, a * grid ** b, "-", color=handle.get_color(), alpha=0.6,
                  label=f"{model}: ∝ N^{b:.2f}")
      ax.set_xlabel("training rows N")
      ax.set_title(title)
    result["models"][model] = model_result
  for ax in axes:
    ax.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(os.path.join(out, "fractions.png"), dpi=110)
  fits = ["", "Power-law exponents b (error ∝ N^b; more negative = falls faster with data):", ""]
  for model, r in result["models"].items():
    fits.append(f"- {model}: " + ", ".join(
        f"{t.split(' (')[0]} {r['fits'][k]['b']:.3f}" for k, _, t in METRICS if k in r["fits"]))
  text = "\n".join(lines + fits) + "\n"
  open(os.path.join(out, "fractions.md"), "w").write(text)
  json.dump(result, open(os.path.join(out, "fractions.json"), "w"), indent=1)
  print(text)


if __name__ == "__main__":
  main()
