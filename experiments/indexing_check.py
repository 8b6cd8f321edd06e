r"""How often powder indexing (xxact_jax/inference/indexing.py) finds a lattice in a prepared
dataset's patterns, and how often that lattice allows the row's crystal system.

  python experiments/indexing_check.py --data=DATA [--split=train|test] [--rows=300] \
      [--thresholds=10,20,30] [--augment] [--many_lines=15] [--output=OUT.json]

Each of `rows` random rows (seeded) of the split is indexed as a measured scan on the grid is
(SNIP background removal, peak search); every lattice's best fit is found once and accepted at
each figure-of-merit threshold. --augment first turns every pattern into a measured-like one with
the training augmentation (data/augment.py at its default ranges: shifts, strain, broadening,
Kα doublet, background, noise, a narrower range) and strips the Kα2 lines again, as the predict
path does for a Cu Kα scan. Prints one line per threshold and, last, the JSON of all of them
(per crystal system: rows, indexed, and the lattices found; and how many of the patterns with at
least `many_lines` lines that no lattice indexes are of a low-symmetry system).
"""

import argparse
import collections
import json
import sys
import time

import numpy as np

from xxact_jax import constants
from xxact_jax import progress as progress_lib
from xxact_jax.data import open_dataset
from xxact_jax.inference import indexing
from xxact_jax.inference import peaks
from xxact_jax.inference import resample


LOW_SYMMETRY = ("triclinic", "monoclinic", "orthorhombic")


def _augmented(xrd: np.ndarray, seed: int) -> np.ndarray:
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import augment  # pylint: disable=g-import-not-at-top
  config = augment.default_config(enabled=True)
  config.apply_prob = 1.0
  out = np.asarray(jax.jit(lambda k, x: augment.augment_xrd(k, x, config))(
      jax.random.key(seed), xrd.astype(np.float32)), np.float64)
  grid = constants.two_theta_grid()
  ka1, ka2 = constants.CU_KA_LINES[1:]
  for row in out:
    inside = row >= 0
    row[inside] = np.maximum(resample.strip_ka2(grid[inside], row[inside], ka1, ka2), 0.0)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--split", default="test", choices=("train", "test"))
  parser.add_argument("--rows", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--thresholds", default="10,20,30")
  parser.add_argument("--augment", action="store_true")
  parser.add_argument("--many_lines", type=int, default=15,
                      help="also count the patterns no lattice indexes that have this many lines")
  parser.add_argument("--output")
  args = parser.parse_args(argv)

  dataset = open_dataset(args.data, args.split)
  rng = np.random.default_rng(args.seed)
  rows = np.sort(rng.choice(len(dataset), min(args.rows, len(dataset)), replace=False))
  batch = dataset.read_batch(rows, ("xrd", "crystal_system"))
  labelled = batch["crystal_system"] >= 0
  xrd, labels = batch["xrd"][labelled].astype(np.float64), batch["crystal_system"][labelled]
  if args.augment:
    xrd = _augmented(xrd, args.seed)

  start = time.time()
  fits, line_counts = [], []
  progress = progress_lib.Progress(len(xrd), "indexing", unit="patterns")
  for pattern in xrd:
    lines = peaks.select_lines(*peaks.lines_of_pattern(pattern))
    fits.append(indexing.fit_lattices(*lines))
    line_counts.append(lines[0].size)
    progress.advance(1)
  seconds = (time.time() - start) / max(len(xrd), 1)

  results = {"data": args.data, "split": args.split, "rows": int(len(xrd)),
             "augment": args.augment, "seconds_per_pattern": round(seconds, 3), "thresholds": {}}
  for threshold in (float(t) for t in args.thresholds.split(",")):
    by_system = collections.defaultdict(collections.Counter)
    allowed = indexed = unindexed_many = unindexed_many_low = 0
    for fit, label, count in zip(fits, labels, line_counts):
      chosen = indexing.choose(fit, threshold)
      system = constants.CRYSTAL_SYSTEMS[label]
      by_system[system]["rows"] += 1
      if chosen is None and count >= args.many_lines:
        unindexed_many += 1
        unindexed_many_low += int(system in LOW_SYMMETRY)
      if chosen is not None:
        indexed += 1
        allowed += int(label in chosen.crystal_systems)
        by_system[system][f"{chosen.family} {chosen.centring}"] += 1
    results["thresholds"][str(threshold)] = {
        "indexed": indexed, "lattice_allows_label": allowed / indexed if indexed else None,
        "unindexed_with_many_lines": unindexed_many,
        "unindexed_with_many_lines_low_symmetry": (unindexed_many_low / unindexed_many
                                                   if unindexed_many else None),
        "by_crystal_system": {s: dict(c) for s, c in by_system.items()}}
    print(f"M_N ≥ {threshold:g}: {indexed} of {len(xrd)} indexed ({indexed / len(xrd):.1%}); "
          f"the lattice allows the label for {allowed} ({allowed / max(indexed, 1):.1%}); "
          f"{unindexed_many} not indexed with ≥ {args.many_lines} lines, "
          f"{unindexed_many_low / max(unindexed_many, 1):.1%} of them triclinic, monoclinic "
          "or orthorhombic", file=sys.stderr)
  text = json.dumps(results)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
