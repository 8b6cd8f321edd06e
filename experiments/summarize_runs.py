r"""One table of the runs under a folder: what each run is, and its last and best evaluations.

  python experiments/summarize_runs.py OUT

Every OUT/<run>/ with a metrics.jsonl is a row: model, regression loss, targets, task sampling,
readout, head (from config.json), wall time (OUT/<run>/done, seconds), and from metrics.jsonl the last
evaluation's formation-energy MAE, crystal-system accuracy and the last logged training losses,
with the best formation-energy MAE over the run. Writes OUT/summary.md and OUT/summary.json.
"""

import json
import os
import sys

import numpy as np


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _head(model: dict) -> str:
  if model["name"] == "crabnet":      # CrabNet's own residual output network
    return "residual " + "-".join(map(str, model.get("crabnet_hidden", ())))
  return "MLP " + "-".join(map(str, model["head_hidden"])) if model.get("head_hidden") else "linear"


def summarize_run(directory: str) -> dict:
  config = json.load(open(os.path.join(directory, "config.json")))
  records = read_jsonl(os.path.join(directory, "metrics.jsonl"))
  evals = [r for r in records if "eval/loss" in r]
  trains = [r for r in records if "loss" in r and "eval/loss" not in r]
  row = {"run": os.path.basename(directory), "model": config["model"]["name"],
         "loss": config.get("regression_loss", "mse"), "targets": "+".join(config["targets"]),
         "task_sampling": config.get("task_sampling", "uniform"),
         "readout": (config["model"].get("readout", "fused_cls")
                     if config["model"]["name"] == "xxact" else "–"),
         "head": _head(config["model"]),
         "steps": evals[-1]["step"] if evals else 0}
  done = os.path.join(directory, "done")
  row["wall_s"] = int(open(done).read().strip()) if os.path.exists(done) else None
  if evals:
    last = evals[-1]
    row["fe_mae_meV"] = last.get("eval/formation_energy_per_atom_mae_meV")
    row["cs_accuracy"] = last.get("eval/crystal_system_accuracy")
    row["eval_loss_fe"] = last.get("eval/loss/formation_energy_per_atom")
    row["eval_loss_cs"] = last.get("eval/loss/crystal_system")
    maes = [(r["eval/formation_energy_per_atom_mae_meV"], r["step"]) for r in evals
            if "eval/formation_energy_per_atom_mae_meV" in r]
    if maes:
      row["best_fe_mae_meV"], row["best_fe_step"] = min(maes)
  if trains:
    tail = trains[-5:]       # the last few logged steps, averaged (per-batch losses are noisy)
    for key, name in (("loss/formation_energy_per_atom", "train_loss_fe"),
                      ("loss/crystal_system", "train_loss_cs")):
      values = [r[key] for r in tail if key in r]
      if values:
        row[name] = float(np.mean(values))
  return row


def _cell(value, fmt):
  return "–" if value is None else format(value, fmt)


def to_markdown(rows) -> str:
  lines = ["| run | model | regression loss | targets | task sampling | readout | head | "
           "formation energy MAE (meV/atom), last | best (step) | crystal system acc., last | "
           "train / eval loss, formation energy | train / eval loss, crystal system | wall |",
           "|" + "---|" * 13]
  for r in rows:
    lines.append(
        f"| {r['run']} | {r['model']} | {r['loss']} | {r['targets']} | {r['task_sampling']} | "
        f"{r['readout']} | {r['head']} | {_cell(r.get('fe_mae_meV'), '.1f')} | "
        f"{_cell(r.get('best_fe_mae_meV'), '.1f')} ({r.get('best_fe_step', '–')}) | "
        f"{_cell(r.get('cs_accuracy'), '.1%')} | "
        f"{_cell(r.get('train_loss_fe'), '.3f')} / {_cell(r.get('eval_loss_fe'), '.3f')} | "
        f"{_cell(r.get('train_loss_cs'), '.3f')} / {_cell(r.get('eval_loss_cs'), '.3f')} | "
        f"{_cell(r.get('wall_s') and r['wall_s'] / 60, '.1f')} min |")
  return "\n".join(lines) + "\n"


def main(out: str) -> list[dict]:
  runs = sorted(d for d in os.listdir(out)
                if os.path.exists(os.path.join(out, d, "metrics.jsonl")))
  rows = [summarize_run(os.path.join(out, d)) for d in runs]
  text = to_markdown(rows)
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(rows, f, indent=1)
  print(text)
  return rows


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
