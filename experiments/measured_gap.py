r"""Where a model's crystal-system accuracy on measured scans goes: sample effects, or compounds.

  python experiments/measured_gap.py --workdir=DIR [--workdir=DIR ...] --data=DATASET \
      --measured=index.csv --output=OUT [--rows=800] [--seed=0]

Two checks for each workdir:

1. **Sample effects.** `--rows` rows of DATASET's test split are simulated again from their
   structures (read from the dataset's own inputs) by the JAX XRD engine: ideal, and with each
   effect of `xxact_jax.xrd_engine.sample` at its documented range (a strain that keeps the point
   group, March–Dollase preferred orientation, a Debye–Waller factor, all three). An effect under
   which the accuracy holds cannot explain a gap between simulated and measured patterns.
2. **The same compound, measured and simulated.** Measured scans (the index CSV of `python -m
   xxact_jax.evaluate --measured`) whose composition and space group match a DATASET row of any
   split: the accuracy on the measured scans against that on the matched rows' stored patterns;
   and the accuracy on the scans with no match (compounds unlike the training data).

Writes OUT/gap.json and OUT/gap.md (the table, also printed). Needs pymatgen.
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np

from xxact_jax import constants
from xxact_jax import evaluate
from xxact_jax import xrd_engine
from xxact_jax.data import dataset as dataset_lib
from xxact_jax.data import featurize
from xxact_jax.data import readers
from xxact_jax.inference.predictor import load

EFFECTS = ("ideal", "strain", "texture", "debye_waller", "all")


def composition_key(amounts: dict) -> tuple:
  """Elements with their atomic fractions to 3 decimals: the same for NaCl, Na2Cl2, Na0.5Cl0.5."""
  total = sum(amounts.values())
  return tuple(sorted((element, round(amount / total, 3)) for element, amount in amounts.items()
                      if amount > 0))


def _row_keys(species, fractions) -> list:
  symbols = constants.ELEMENTS
  return [composition_key({symbols[int(z) - 1]: float(f) for z, f in zip(s, fr) if z > 0})
          for s, fr in zip(species, fractions)]


def read_structures(inputs, material_ids) -> dict:
  """{material_id: pymatgen Structure} of the wanted ids, read from the dataset's inputs."""
  wanted, found = set(material_ids), {}
  for path in inputs:
    for record in readers.iter_records(path):
      if record.material_id in wanted and record.error is None:
        found[record.material_id] = featurize.structure_from_payload(record.kind, record.payload)
        if len(found) == len(wanted):
          return found
  return found


def simulate_effects(structures: list, symprec: float, seed: int) -> dict:
  """{effect: (patterns float32[N, 4250], ok bool[N])} for EFFECTS."""
  from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  rotations = [[op.rotation_matrix for op in
                SpacegroupAnalyzer(s, symprec=symprec).get_symmetry_operations(cartesian=True)]
               for s in structures]
  drawn = xrd_engine.random_effects(rotations, rng)
  chosen = {
      "ideal": None,
      "strain": xrd_engine.SampleEffects(strain=drawn.strain),
      "texture": xrd_engine.SampleEffects(texture_hkl=drawn.texture_hkl, march_r=drawn.march_r),
      "debye_waller": xrd_engine.SampleEffects(b_factor=drawn.b_factor),
      "all": drawn,
  }
  out = {}
  for name, effects in chosen.items():
    result = xrd_engine.simulate(structures, errors="return", effects=effects)
    ok = np.ones(len(structures), bool)
    ok[list(result.errors)] = False
    out[name] = (result.patterns, ok)
  return out


def measured_gap(workdirs, data, measured, output, rows=800, seed=0) -> dict:
  test = dataset_lib.open_dataset(data, "test")
  every = dataset_lib.open_dataset(data, None)
  metadata = every.metadata
  rng = np.random.default_rng(seed)
  picked = np.sort(rng.choice(len(test), size=min(rows, len(test)), replace=False))
  batch = test.read_batch(picked)
  ids = test.material_ids(picked)
  print(f"measured_gap: reading {len(ids)} test structures from {metadata['inputs']}",
        file=sys.stderr)
  structures = read_structures(metadata["inputs"], ids)
  keep = np.array([i in structures for i in ids])
  simulated = simulate_effects([structures[i] for i, k in zip(ids, keep) if k],
                               metadata.get("symprec", 0.1), seed)
  ok = np.logical_and.reduce([good for _, good in simulated.values()])
  labels = batch["crystal_system"][keep][ok]
  species, fractions = batch["species"][keep][ok], batch["fractions"][keep][ok]

  # Measured scans matched to dataset rows by composition and space group.
  index = evaluate.read_index(measured)
  everything = every.read_batch(np.arange(len(every)),
                                fields=("species", "fractions", "spacegroup_number"))
  by_key = {}
  for row, key in enumerate(_row_keys(everything["species"], everything["fractions"])):
    by_key.setdefault((key, int(everything["spacegroup_number"][row])), row)
  from pymatgen.core import Composition  # pylint: disable=g-import-not-at-top
  match = []
  for entry in index:
    amounts = {str(e): float(a) for e, a in Composition(entry["formula"]).items()}
    match.append(by_key.get((composition_key(amounts), int(entry["spacegroup_number"] or 0)), -1))
  match = np.array(match)
  train_rows = dataset_lib.open_dataset(data, "train").rows
  in_train = int(np.isin(every.rows[match[match >= 0]], train_rows).sum())

  results = {"data": os.path.abspath(data), "measured": os.path.abspath(measured),
             "test_rows": int(len(labels)), "scans": len(index),
             "scans_matched": int((match >= 0).sum()), "matched_in_train": in_train, "runs": {}}
  for workdir in workdirs:
    predictor = load(workdir, "best")
    if "crystal_system" not in predictor.targets:
      raise SystemExit(f"{workdir}: the model does not predict crystal_system")
    run = {}
    for name, (patterns, _) in simulated.items():
      probabilities = predictor.predict_arrays(species, fractions, patterns[ok])["crystal_system"]
      run[name] = float((probabilities.argmax(-1) == labels).mean())
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      arrays, kept, failed = evaluate.load_inputs(predictor, index)
    read = {id(row) for row in kept}
    kept_match = np.array([m for m, row in zip(match, index) if id(row) in read])
    scan_labels = np.array([constants.CRYSTAL_SYSTEMS.index(r["crystal_system"]) for r in kept])
    s, f, x = (np.stack(c) for c in zip(*arrays))
    correct = (predictor.predict_arrays(s, f, x, measured=True)["crystal_system"].argmax(-1)
               == scan_labels)
    matched = kept_match >= 0
    stored = every.read_batch(kept_match[matched])
    stored_prob = predictor.predict_arrays(stored["species"], stored["fractions"],
                                           stored["xrd"])["crystal_system"]
    run.update(
        measured_all=float(correct.mean()),
        measured_matched=float(correct[matched].mean()) if matched.any() else None,
        simulated_matched=(float((stored_prob.argmax(-1) == stored["crystal_system"]).mean())
                           if matched.any() else None),
        measured_unmatched=float(correct[~matched].mean()) if (~matched).any() else None,
        scans_failed=len(failed))
    results["runs"][workdir] = run
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "gap.json"), "w") as f:
    json.dump(results, f, indent=1)
  table = markdown(results)
  with open(os.path.join(output, "gap.md"), "w") as f:
    f.write(table)
  print(table)
  return results


def markdown(results: dict) -> str:
  def pct(v):
    return "–" if v is None else f"{100 * v:.1f} %"
  head = ("| run | simulated test: ideal | + strain | + texture | + Debye–Waller | + all three "
          f"| measured, all {results['scans']} | measured, matched ({results['scans_matched']}) "
          "| same compounds simulated | measured, unmatched |\n|---" + "|---" * 9 + "|\n")
  lines = [f"| {os.path.basename(os.path.normpath(w))} | " + " | ".join(pct(r[k]) for k in (
      *EFFECTS, "measured_all", "measured_matched", "simulated_matched", "measured_unmatched"))
      + " |" for w, r in results["runs"].items()]
  return (head + "\n".join(lines) + f"\n\nSimulated test rows: {results['test_rows']}; matched "
          f"scans whose dataset row is in the training split: {results['matched_in_train']}.\n")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", action="append", required=True)
  parser.add_argument("--data", required=True)
  parser.add_argument("--measured", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--rows", type=int, default=800)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  measured_gap(args.workdir, args.data, args.measured, args.output, args.rows, args.seed)


if __name__ == "__main__":
  main()
