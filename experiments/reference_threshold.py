r"""Similarities of the reference lookup for right answers, wrong answers and garbage scans.

  python experiments/reference_threshold.py --data=DATA \
      --measured=../shared/data/measured_xrd_dev/index.csv [--simulated=300]

The lookup (xxact_jax/inference/reference.py) compares a scan with the training rows of its
composition. Its similarity threshold (reference.MIN_SIMILARITY) should keep the lookup's right
answers and refuse scans that are no pattern of the composition at all. Four sets of scans, each
prepared as identification.identify prepares a scan for the lookup (resample.to_model_grid, SNIP background removal) and
looked up in DATA's train split:

- measured: the development scans whose composition the split holds; right or wrong against
  their label;
- simulated: `--simulated` rows of the train split itself (their phase is in the reference), their
  stored patterns with the effects of a measurement (a 0.1° zero shift, broadening, a background,
  counting noise, a 20–80° range); right or wrong against their label;
- polymorph: as many test-split rows whose composition the train split holds under other
  material ids (a phase the reference lacks), prepared the same way;
- garbage: for compositions of the first three sets, a flat scan with noise, uniform noise, a comb
  of peaks every 1.5° and a single peak, none of which the lookup should answer.

Prints one JSON line: for thresholds from 0.40 to 0.90, the answers each set keeps (and the right
ones it loses) and the garbage scans still answered; quantiles of the similarities.
"""

import argparse
import json
import warnings

import numpy as np

from xxact_jax import constants
from xxact_jax.data import open_dataset
from xxact_jax.evaluate import read_index
from xxact_jax.inference import inputs
from xxact_jax.inference import reference
from xxact_jax.inference import resample

THRESHOLDS = np.round(np.arange(0.40, 0.901, 0.05), 2)


def _garbage(rng) -> dict[str, np.ndarray]:
  grid = constants.two_theta_grid()
  peaks = lambda centres, sigma=0.1: np.exp(
      -0.5 * ((grid[:, None] - np.asarray(centres)[None]) / sigma) ** 2).sum(-1)
  return {"flat": 50 + rng.normal(0, 1, grid.size),
          "noise": rng.uniform(0, 100, grid.size),
          "comb": 1 + 100 * peaks(np.arange(10, 88, 1.5)),
          "one_peak": 1 + 100 * peaks([31.7])}


def _prepared(intensity, two_theta=None) -> np.ndarray:
  """A scan as the predictor hands it to the lookup: through resample.to_model_grid with SNIP
  background removal, as identification.identify prepares every scan for the lookup."""
  two_theta = constants.two_theta_grid() if two_theta is None else two_theta
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return inputs.pattern_on_grid((two_theta, intensity), None,
                                  resample.Preprocessing(background="snip"))


def _measured_like(pattern, rng) -> np.ndarray:
  """A stored pattern as a diffractometer might record it (see the module docstring)."""
  grid = constants.two_theta_grid()
  shifted = np.interp(grid - 0.1, grid, pattern)
  kernel = np.exp(-0.5 * (np.arange(-30, 31) * constants.TWO_THETA_STEP / 0.11) ** 2)
  broad = np.convolve(shifted, kernel / kernel.sum(), mode="same")
  counts = 2000 * broad / max(broad.max(), 1e-9) + 200 * np.exp(-grid / 30) + 50
  keep = (grid >= 20) & (grid <= 80)
  return _prepared(rng.poisson(counts)[keep].astype(np.float64), grid[keep])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--measured", required=True)
  parser.add_argument("--simulated", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  database = reference.ReferenceDatabase(args.data, "train")
  max_elements = open_dataset(args.data).metadata["max_elements"]
  results = {"measured": [], "simulated": [], "polymorph": [], "garbage": []}
  compositions = []

  for row in read_index(args.measured):
    if row.get("error"):
      continue
    species, fractions = inputs.encode(row["formula"], max_elements)
    if not database.candidates(species, fractions):
      continue
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      pattern = inputs.pattern_on_grid(row["path"], row["wavelength"],
                                       resample.Preprocessing(background="snip"))
    match = database.match(species, fractions, pattern)
    label = constants.CRYSTAL_SYSTEMS.index(row["crystal_system"])
    results["measured"].append((match.similarity, match.crystal_system == label))
    compositions.append((species, fractions))

  # Simulated scans of rows the reference holds (the train split itself), and of test rows whose
  # composition it holds under another material id: polymorphs the reference lacks.
  for name, split in (("simulated", "train"), ("polymorph", "test")):
    rows = open_dataset(args.data, split)
    batch = rows.read_batch(np.arange(len(rows)), ("species", "fractions", "xrd",
                                                   "crystal_system"))
    known = [i for i in rng.permutation(len(rows))
             if database.candidates(batch["species"][i], batch["fractions"][i])]
    for i in known[:args.simulated]:
      pattern = _measured_like(batch["xrd"][i].astype(np.float64), rng)
      match = database.match(batch["species"][i], batch["fractions"][i], pattern)
      results[name].append((match.similarity,
                            match.crystal_system == int(batch["crystal_system"][i])))
      compositions.append((batch["species"][i], batch["fractions"][i]))
    del batch

  for species, fractions in compositions[:40] + compositions[-2 * args.simulated:][::5]:
    for name, pattern in _garbage(rng).items():
      match = database.match(species, fractions, _prepared(pattern))
      results["garbage"].append((match.similarity, name))

  summary = {"data": args.data, **{k: len(v) for k, v in results.items()}, "thresholds": {}}
  for t in THRESHOLDS:
    entry = {}
    for name in ("measured", "simulated", "polymorph"):
      kept = [right for s, right in results[name] if s >= t]
      entry[name] = {"answered": len(kept), "right": int(sum(kept)),
                     "right_refused": int(sum(r for s, r in results[name] if s < t))}
    entry["garbage_answered"] = int(sum(s >= t for s, _ in results["garbage"]))
    summary["thresholds"][f"{t:.2f}"] = entry
  for name in ("measured", "simulated", "polymorph"):
    right = [s for s, r in results[name] if r]
    wrong = [s for s, r in results[name] if not r]
    summary[f"{name}_right_similarity_quantiles"] = np.quantile(right, [0, 0.05, 0.1, 0.5]).round(
        3).tolist() if right else None
    summary[f"{name}_wrong_similarity_quantiles"] = np.quantile(wrong, [0, 0.5, 1]).round(
        3).tolist() if wrong else None
  garbage = {}
  for s, name in results["garbage"]:
    garbage.setdefault(name, []).append(s)
  summary["garbage_similarity_quantiles"] = {
      k: np.quantile(v, [0.5, 0.9, 0.99, 1]).round(3).tolist() for k, v in garbage.items()}
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
