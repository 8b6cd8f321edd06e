r"""Featurisation throughput: pymatgen get_pattern alone vs. the full per-structure pipeline.

  python benchmarks/featurize.py --num=200                # mp_36k sample (default source)
  python benchmarks/featurize.py --smoke                  # 10 structures of the embedded sample
  python benchmarks/featurize.py --check_dataset=/tmp/mp36k_full --num=100
      # XRD of stored records vs. an independent XRDCalculator + dense smearing

Stage times are CPU seconds of this process (robust to other load on the machine);
`write` is the TensorStore write of the featurised rows (all arrays, zstd).
"""

import os
import sys
import tempfile
import time
import warnings

from absl import app
from absl import flags
import numpy as np
import pandas as pd

import _common
from xxact_jax import constants
from xxact_jax.data import block_writer
from xxact_jax.data import embedded
from xxact_jax.data import featurize
from xxact_jax.data import readers
from xxact_jax.data import schema
from xxact_jax.data import store
from xxact_jax.data import xrd

# The shared data folder beside the repository, where present.
MP36K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                     "mp_36k", "mp_36k.csv.xz")

_SOURCE = flags.DEFINE_string("source", MP36K if os.path.exists(MP36K) else embedded.SAMPLE_FILE,
                              "CSV with a cif column.")
_NUM = flags.DEFINE_integer("num", 200, "Structures to time (random rows).")
_SEED = flags.DEFINE_integer("seed", 0, "Row sampling seed.")
_SMOKE = flags.DEFINE_bool("smoke", False, "10 structures of the embedded sample.")
_CHECK_DATASET = flags.DEFINE_string("check_dataset", None,
                                     "Compare this dataset's XRD with an independent computation.")


def sample_rows(source: str, num: int, seed: int) -> pd.DataFrame:
  table = pd.read_csv(source)
  return table.sample(n=min(num, len(table)), random_state=seed)


def benchmark(source: str, num: int, seed: int) -> dict:
  rows = sample_rows(source, num, seed)
  times = dict(parse=0.0, get_pattern=0.0, smear=0.0, symmetry=0.0, composition=0.0)
  fields = schema.fields(schema.DEFAULT_MAX_ELEMENTS)
  buffer = block_writer.BlockBuffer(0, 0, len(rows), np.zeros(len(rows), np.int8), fields)
  clock = time.process_time
  # Warm-up: first calls pay for imports and caches.
  warm = featurize.structure_from_payload("cif", rows["cif"].iloc[0])
  xrd.smear_sticks(*featurize.stick_pattern(warm))
  featurize.symmetry_labels(warm)
  start_wall, last_log = time.perf_counter(), time.perf_counter()
  sticks = []
  for i, (_, row) in enumerate(rows.iterrows()):
    t0 = clock()
    structure = featurize.structure_from_payload("cif", row["cif"])
    t1 = clock()
    two_theta, intensity = featurize.stick_pattern(structure)
    t2 = clock()
    sticks.append(len(two_theta))
    pattern = xrd.smear_sticks(two_theta, intensity)
    t3 = clock()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      crystal_system, spacegroup = featurize.symmetry_labels(structure)
    t4 = clock()
    species, fractions = featurize.composition_lib.encode_composition(
        featurize._element_amounts(structure), schema.DEFAULT_MAX_ELEMENTS)  # pylint: disable=protected-access
    t5 = clock()
    for key, value in zip(times, np.diff([t0, t1, t2, t3, t4, t5])):
      times[key] += value
    record = readers.RawRecord(row["material_id"], "cif", None,
                               {"formation_energy_per_atom": row["formation_energy_per_atom"],
                                "band_gap": row["band_gap"]}, "")
    buffer.add(record, dict(species=species, fractions=fractions, xrd=pattern,
                            crystal_system=crystal_system, spacegroup_number=spacegroup), None)
    if time.perf_counter() - last_log > 10:
      last_log = time.perf_counter()
      rate = (i + 1) / (last_log - start_wall)
      print(f"  {i + 1}/{len(rows)} structures, {rate:.1f}/s, ETA {(len(rows) - i - 1) / rate:.0f}s",
            file=sys.stderr)
  with tempfile.TemporaryDirectory() as tmp:
    arrays = store.create_arrays(tmp, len(rows), len(rows), schema.DEFAULT_MAX_ELEMENTS)
    kv = store.open_kvstore(tmp)
    t0 = clock()
    buffer.write(arrays, kv)
    times["write"] = clock() - t0
  n = len(rows)
  per = {k: 1000 * float(v) / n for k, v in times.items()}
  total = sum(times.values())
  return {"source": os.path.basename(source), "structures": n,
          "mean_sites": float(rows["n_sites"].mean()) if "n_sites" in rows else None,
          "ms_per_structure": {k: round(v, 2) for k, v in per.items()},
          "get_pattern_alone_per_s": round(float(n / times["get_pattern"]), 1),
          "full_pipeline_per_s_one_core": round(float(n / total), 1),
          "smear_plus_write_vs_get_pattern_pct": round(
              float(100 * (times["smear"] + times["write"]) / times["get_pattern"]), 2),
          # How compact a stick (peak list) storage of the patterns could be.
          "sticks_per_pattern": {q: float(np.percentile(sticks, p)) for q, p in
                                 (("median", 50), ("p90", 90), ("p99", 99), ("max", 100))}}


def check_dataset(path: str, num: int, seed: int) -> dict:
  """Max deviation of stored XRD from XRDCalculator + dense Gaussian sum (float64)."""
  from pymatgen.analysis.diffraction.xrd import XRDCalculator  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  ds = open_dataset(path)
  sources = pd.concat([pd.read_csv(p) for p in ds.metadata["inputs"]]).set_index("material_id")
  calculator = XRDCalculator(wavelength="CuKa")
  grid = constants.two_theta_grid()
  worst_rel = worst_abs = 0.0
  failures = 0
  chosen = np.random.default_rng(seed).choice(len(ds), min(num, len(ds)), replace=False)
  for i in chosen:
    record = ds[int(i)]
    structure = featurize.structure_from_payload("cif", sources.loc[record["material_id"], "cif"])
    sticks = calculator.get_pattern(structure, two_theta_range=(5, 90))
    dense = (np.asarray(sticks.y)[None] * np.exp(
        -(grid[:, None] - np.asarray(sticks.x)[None]) ** 2 / (2 * 0.1 ** 2))).sum(1)
    reference = 100 * dense / dense.max()
    stored = record["xrd"].astype(np.float64)
    error = np.abs(stored - reference)
    worst_abs = max(worst_abs, float(error.max()))
    big = reference > 1e-3
    worst_rel = max(worst_rel, float((error[big] / reference[big]).max()))
    failures += int(not np.all(error <= 2 ** -11 * reference + 1e-4))
  return {"dataset": path, "records_checked": len(chosen), "max_abs_error": worst_abs,
          "max_rel_error_where_ref_gt_1e-3": worst_rel,
          "float16_half_ulp_rel": 2 ** -11, "records_outside_float16_rounding": failures}


def main(argv):
  del argv
  print(f"machine: {_common.machine()}")
  if _CHECK_DATASET.value:
    print(check_dataset(_CHECK_DATASET.value, _NUM.value, _SEED.value))
    return
  source, num = (embedded.SAMPLE_FILE, 10) if _SMOKE.value else (_SOURCE.value, _NUM.value)
  result = benchmark(source, num, _SEED.value)
  print(result)
  if not _SMOKE.value and result["smear_plus_write_vs_get_pattern_pct"] >= 10:
    print("WARNING: smearing + writing add 10 % or more to get_pattern", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
