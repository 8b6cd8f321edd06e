r"""The model card's figures (docs/MODELS.md) of a shipped model.

  python experiments/pretrained_metrics.py [--model=xxact_jax/pretrained/NAME-vVERSION] \
      --data=/data/mp36k [--measured=../shared/data/measured_xrd_dev/index.csv] --output=OUT

- mp_36k's test split, through the predictor as shipped (the ensemble's averaged outputs, the
  stored precision), each member alone too: formation-energy MAE (meV/atom), band-gap MAE (eV),
  crystal-system and space-group accuracy (top-1; top-5 for space groups).
- the measured scans (evaluate --measured): crystal system and space group, the model alone
  (--reference=none --no-indexing) and the default path (the compact reference, indexing).
- load and predict times: `xxact_jax.load()` in this process, and one
  `python -m xxact_jax.predict --formula=... --xrd=<the packaged sample scan>` end to end.
OUT/metrics.json holds them all; the last line of stdout is the same JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def test_split_metrics(predictor, data_path: str, split: str = "test") -> dict:
  from xxact_jax import targets as targets_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import ensemble as ensemble_lib  # pylint: disable=g-import-not-at-top
  ds = open_dataset(data_path, split)
  fields = ("species", "fractions", "xrd") + predictor.targets
  batch = ds.read_batch(np.arange(len(ds)), fields)
  start = time.perf_counter()
  each = predictor.predict_each(batch["species"], batch["fractions"],
                                batch["xrd"].astype(np.float32), measured=False)
  seconds = time.perf_counter() - start

  def score(out):
    m = {}
    for t in predictor.targets:
      target = targets_lib.get(t)
      label = batch[t]
      if target.is_regression:
        keep = np.isfinite(label)
        mae = float(np.mean(np.abs(out[t][keep] - label[keep])))
        m[f"{t}_mae" + ("_meV" if t == "formation_energy_per_atom" else "")] = (
            mae * 1000 if t == "formation_energy_per_atom" else mae)
      else:
        index = target.class_index(label.astype(np.int64))
        keep = index >= 0
        top = np.argsort(-out[t][keep], axis=-1)
        m[f"{t}_accuracy"] = float(np.mean(top[:, 0] == index[keep]))
        if t == "spacegroup_number":
          m[f"{t}_top5_accuracy"] = float(np.mean((top[:, :5] == index[keep][:, None]).any(-1)))
    return m

  result = {"split": split, "rows": len(ds), "seconds": round(seconds, 1),
            "ensemble": score(ensemble_lib.average_outputs(each, predictor.targets))}
  if len(each) > 1:
    result["members"] = [score(out) for out in each]
  return result


def measured_metrics(model: str, index_csv: str, output: str) -> dict:
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  keys = ("scans_evaluated", "crystal_system_accuracy", "crystal_system_accuracy_ci95",
          "spacegroup_number_accuracy", "spacegroup_number_top5_accuracy", "reference",
          "indexing")
  result = {}
  for name, reference, indexing in (("model_alone", "none", False),
                                    ("default", "auto", True)):
    m = evaluate.evaluate_measured(model, index_csv, os.path.join(output, name),
                                   reference=reference, indexing=indexing)
    result[name] = {k: m.get(k) for k in keys}
  return result


def timings(model: str, predictor_seconds: float) -> dict:
  from xxact_jax.inference import pretrained  # pylint: disable=g-import-not-at-top
  sample = pretrained.quick_start_sample()
  command = [sys.executable, "-m", "xxact_jax.predict", f"--formula={sample['formula']}",
             f"--xrd={sample['path']}", f"--wavelength={sample['wavelength']}"]
  env = dict(os.environ)
  if os.path.abspath(model) != os.path.abspath(_default_model_dir() or ""):
    env["XXACT_JAX_PRETRAINED"] = os.path.abspath(model)
  start = time.perf_counter()
  done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  return {"load_seconds": round(predictor_seconds, 2),
          "predict_cli_seconds": round(time.perf_counter() - start, 2),
          "predict_cli_command": " ".join(command[1:]), "predict_cli_status": done.returncode,
          "predict_cli_output": done.stdout.strip()}


def _default_model_dir():
  from xxact_jax.inference import pretrained  # pylint: disable=g-import-not-at-top
  try:
    return pretrained.find()
  except Exception:  # pylint: disable=broad-except
    return None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default=None, help="a model folder (default: the shipped one)")
  parser.add_argument("--data", required=True, help="the prepared mp_36k")
  parser.add_argument("--measured", help="index CSV of labelled measured scans")
  parser.add_argument("--output", required=True)
  args = parser.parse_args(argv)
  from xxact_jax.inference import pretrained  # pylint: disable=g-import-not-at-top
  model = args.model or pretrained.find()
  os.makedirs(args.output, exist_ok=True)
  start = time.perf_counter()
  predictor = pretrained.load(model)
  load_seconds = time.perf_counter() - start
  manifest = predictor.manifest
  result = {"model": f"{manifest['name']} v{manifest['version']}", "path": os.path.abspath(model),
            "members": len(manifest["members"]), "parameters": manifest["parameters"],
            "params_dtype": manifest["params_dtype"], "bytes": manifest["bytes"],
            "train_seconds": [m.get("train_seconds") for m in manifest["members"]]}
  result["test"] = test_split_metrics(predictor, args.data)
  print(json.dumps(result["test"]), file=sys.stderr, flush=True)
  if args.measured:
    result["measured"] = measured_metrics(model, args.measured, args.output)
  result["timings"] = timings(model, load_seconds)
  with open(os.path.join(args.output, "metrics.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
