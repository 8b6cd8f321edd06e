r"""How closely a compact reference (inference/compact_reference.py) stands in for its dataset.

  python experiments/compact_reference_check.py --data=/data/mp36k \
      --measured=../shared/data/measured_xrd_dev/index.csv [--reference=OUT/reference.npz] \
      [--rows=2000] [--output=check.json]

Builds the compact reference of DATA's train split (or reads --reference), then reports
(1) its size, (2) how the patterns drawn from its peaks match the stored ones on --rows random
rows: largest absolute difference on the 0–100 scale, and the cosine the lookup scores with
(square-root intensities broadened to σ = 0.25°), and (3) on the measured scans, whether the
lookup against it answers as the lookup against the full split does (same matched row, same
crystal system and space group), with and without the indexed lattice, as the predictor looks
scans up (identification.identify).
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

from xxact_jax.data import open_dataset
from xxact_jax.evaluate import read_index
from xxact_jax.inference import answers
from xxact_jax.inference import compact_reference
from xxact_jax.inference import identification
from xxact_jax.inference import patterns
from xxact_jax.inference import reference as reference_lib


def redraw_fidelity(data, compact: compact_reference.CompactDataset, rows: int) -> dict:
  ds = open_dataset(data, "train")
  ids = {m: i for i, m in enumerate(ds.material_ids(np.arange(len(ds))))}
  pick = np.random.default_rng(0).permutation(len(compact))[:rows]
  stored = ds.read_batch(np.asarray([ids[m] for m in compact.material_ids(pick)]),
                         ("xrd",))["xrd"].astype(np.float64)
  drawn = np.stack([compact.pattern(int(i)) for i in pick]).astype(np.float64)
  kernel = reference_lib._kernel(reference_lib.COMPARE_SIGMA_DEG)  # pylint: disable=protected-access
  everywhere = np.ones_like(drawn, bool)
  a = reference_lib._prepared(drawn, everywhere, kernel)  # pylint: disable=protected-access
  b = reference_lib._prepared(stored, everywhere, kernel)  # pylint: disable=protected-access
  cosine = np.sum(a * b, axis=1)
  error = np.abs(drawn - stored).max(axis=1)
  q = lambda x, p: float(np.percentile(x, p))
  return {"rows": int(len(pick)),
          "max_abs_difference": {"median": q(error, 50), "p95": q(error, 95), "p99": q(error, 99),
                                 "max": float(error.max())},
          "mean_abs_difference": float(np.abs(drawn - stored).mean()),
          "lookup_cosine": {"min": float(cosine.min()), "p1": q(cosine, 1),
                            "median": q(cosine, 50)}}


def lookups(index_csv: str, full, compact) -> dict:
  """The matches of every scan against both references, as the predictor finds them."""
  results = []
  for row in read_index(index_csv):
    if row.get("error"):
      continue
    scan = patterns.read_pattern(row["path"])
    found = {}
    for name, ref in (("full", full), ("compact", compact)):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for with_lattice in (False, True):
          found[(name, with_lattice)] = identification.identify(
              row["formula"], scan, row["wavelength"], targets=("crystal_system",),
              reference=ref, indexing=with_lattice).match
    results.append((row, found))
  out = {}
  for with_lattice in (False, True):
    pairs = [(a[("full", with_lattice)], a[("compact", with_lattice)]) for _, a in results]
    matched = [(f, c) for f, c in pairs if f is not None or c is not None]
    label = "with_lattice" if with_lattice else "without_lattice"
    out[label] = {
        "scans": len(pairs), "matched_full": sum(f is not None for f, _ in pairs),
        "matched_compact": sum(c is not None for _, c in pairs),
        "same_row": sum(f is not None and c is not None and f.material_id == c.material_id
                        for f, c in matched),
        "same_crystal_system": sum(f is not None and c is not None
                                   and f.crystal_system == c.crystal_system for f, c in matched),
        "same_spacegroup": sum(f is not None and c is not None
                               and f.spacegroup_number == c.spacegroup_number
                               for f, c in matched),
        "largest_similarity_difference": max(
            [abs(f.similarity - c.similarity) for f, c in matched
             if f is not None and c is not None and f.material_id == c.material_id] or [0.0]),
        "differing": [{"id": row["id"], "full": f and answers.match_json(f),
                      "compact": c and answers.match_json(c)}
                      for (row, _), (f, c) in zip(results, pairs)
                      if (f is None) != (c is None) or (f is not None and
                                                        f.material_id != c.material_id)],
    }
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--measured", help="index CSV of measured scans")
  parser.add_argument("--reference", help="a compact reference to check (default: built now)")
  parser.add_argument("--rows", type=int, default=2000)
  parser.add_argument("--output", help="write the figures here (JSON)")
  args = parser.parse_args(argv)
  result = {"data": os.path.abspath(args.data)}
  path = args.reference
  if not path:
    path = os.path.join(os.path.dirname(os.path.abspath(args.output or "check.json")),
                        compact_reference.FILE_NAME)
    start = time.perf_counter()
    arrays = compact_reference.build(args.data, "train", progress=lambda d, t: print(
        f"  {d}/{t}", file=sys.stderr, flush=True) if d % 8192 < 1024 or d == t else None)
    compact_reference.save(arrays, path)
    result["build_seconds"] = round(time.perf_counter() - start, 1)
  compact = compact_reference.CompactDataset(path)
  peaks = np.diff(compact._arrays["peak_offsets"])  # pylint: disable=protected-access
  result.update({"reference": path, "bytes": os.path.getsize(path), "rows": len(compact),
                 "peaks_per_row": {"mean": float(peaks.mean()), "median": float(np.median(peaks)),
                                   "max": int(peaks.max())},
                 "meta": compact.meta})
  print(json.dumps(result), file=sys.stderr, flush=True)
  result["redraw"] = redraw_fidelity(args.data, compact, args.rows)
  print(json.dumps(result["redraw"]), file=sys.stderr, flush=True)
  if args.measured:
    full = reference_lib.ReferenceDatabase(args.data, "train")
    result["lookups"] = lookups(args.measured, full, compact_reference.open_reference(path))
  text = json.dumps(result, indent=1)
  if args.output:
    with open(args.output, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
