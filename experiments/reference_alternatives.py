r"""Lookups for the measured scans of compositions the reference lacks, against the model.

  python experiments/reference_alternatives.py --data=DATA \
      --measured=../shared/data/measured_xrd_dev/index.csv \
      --predictions=EVAL/predictions.jsonl

PREDICTIONS: `python -m xxact_jax.evaluate --measured` output with the reference lookup on (the
default); its scans without "reference" are the unknown compositions. For each of them, two
lookups in DATA's train split are scored against the model's answer:

- nearest: the training pattern of any composition that agrees best with the scan, the lattice
  scaled by up to ±10 % (and a vote of the five nearest);
- analogue: the best-matching row with the same stoichiometry and the same most electronegative
  element, scaled by up to ±8 %.

Patterns are compared as in xxact_jax/inference/reference.py: square-root intensities broadened
to σ = 0.25°, cosine over the scan's range after SNIP background removal. Prints one JSON line.
"""

import argparse
import json
import warnings

import numpy as np
from pymatgen.core import Element
from scipy.signal import fftconvolve

from xxact_jax import constants
from xxact_jax.data import open_dataset
from xxact_jax.evaluate import read_index
from xxact_jax.inference import inputs
from xxact_jax.inference import reference
from xxact_jax.inference import resample


def _prepared(x, kernel):
  x = fftconvolve(np.sqrt(np.maximum(x, 0.0)), kernel[None], mode="same", axes=1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def scan_versions(pattern, strains, kernel):
  """The scan resampled for each lattice scaling d → d(1 + ε) of the references: [S, 4250]."""
  grid = constants.two_theta_grid()
  measured = pattern >= 0
  sin_theta = np.sin(np.radians(grid / 2))
  rows = []
  for e in strains:
    source = 2 * np.degrees(np.arcsin(np.clip(sin_theta * (1 + e), 0, 1)))
    y = np.interp(source, grid, np.where(measured, np.maximum(pattern, 0), 0), left=0, right=0)
    inside = np.interp(source, grid, measured.astype(float), left=0, right=0) > 0.5
    rows.append(np.where(inside, y, 0.0))
  return _prepared(np.stack(rows), kernel)


def _anion(species):
  return max((int(z) for z in species if z > 0), key=lambda z: Element.from_Z(z).X or 0.0)


def _stoichiometry(fractions):
  return tuple(sorted(round(float(f), 3) for f in fractions if f > 0))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--measured", required=True)
  parser.add_argument("--predictions", required=True)
  args = parser.parse_args()
  warnings.simplefilter("ignore")
  ds = open_dataset(args.data, "train")
  n = len(ds)
  labels = ds.read_batch(np.arange(n), ("species", "fractions", "crystal_system"))
  kernel = reference._kernel(reference.COMPARE_SIGMA_DEG)  # pylint: disable=protected-access
  references = np.concatenate([
      _prepared(ds.read_batch(np.arange(s, min(n, s + 2048)), ("xrd",))["xrd"].astype(
          np.float32), kernel) for s in range(0, n, 2048)]).astype(np.float32)
  analogues: dict = {}
  for i in range(n):
    key = (_stoichiometry(labels["fractions"][i]), _anion(labels["species"][i]))
    analogues.setdefault(key, []).append(i)
  model = {r["id"]: r for r in map(json.loads, open(args.predictions)) if "error" not in r}
  system = labels["crystal_system"]
  scores = {"model": [], "nearest": [], "nearest_vote5": [], "analogue": [],
            "model_where_analogue": []}
  for row in read_index(args.measured):
    predicted = model.get(row["id"])
    if predicted is None or "reference" in predicted or not row["crystal_system"]:
      continue
    label = constants.CRYSTAL_SYSTEMS.index(row["crystal_system"])
    pattern = resample.load_measured_pattern(row["path"], row["wavelength"],
                                             resample.Preprocessing(background="snip"))
    model_hit = predicted["crystal_system"] == row["crystal_system"]
    scores["model"].append(model_hit)
    wide = scan_versions(pattern, np.linspace(-0.10, 0.10, 41), kernel).astype(np.float32)
    best = (references @ wide.T).max(axis=1)
    top = np.argsort(-best)[:5]
    scores["nearest"].append(system[top[0]] == label)
    scores["nearest_vote5"].append(np.bincount(system[top], minlength=7).argmax() == label)
    species, fractions = inputs.encode(row["formula"], int(ds.metadata["max_elements"]))
    rows = analogues.get((_stoichiometry(fractions), _anion(species)), [])
    if rows:
      narrow = scan_versions(pattern, np.linspace(-0.08, 0.08, 33), kernel).astype(np.float32)
      k = rows[int(np.argmax((references[rows] @ narrow.T).max(axis=1)))]
      scores["analogue"].append(system[k] == label)
      scores["model_where_analogue"].append(model_hit)
  print(json.dumps({name: {"scans": len(v), "accuracy": float(np.mean(v)) if v else None}
                    for name, v in scores.items()}))


if __name__ == "__main__":
  main()
