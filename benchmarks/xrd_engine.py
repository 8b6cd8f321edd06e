r"""XRD engine (JAX, xxact_jax.xrd_engine) against pymatgen get_pattern + xrd.smear_sticks.

  python benchmarks/xrd_engine.py --mode=speed --num=1024        # patterns/s, side by side
  python benchmarks/xrd_engine.py --mode=agreement --num=1000    # + the 20 largest cells
  python benchmarks/xrd_engine.py --mode=both --smoke            # 32 structures, a quick check

Structures are random mp_36k rows (read with data/readers.py, built with
featurize.structure_from_payload; parsing is not timed). The engine runs `xrd_engine.simulate`
on all of them at once (planning on the host included); its first call compiles, the reported
rate is the best of the later ones. pymatgen runs `featurize.stick_pattern` (XRDCalculator
CuKa, 5-90°) + `xrd.smear_sticks`, one structure at a time in this process, as prepare does.
Wall and CPU seconds are both reported: the machine is shared, and CPU seconds of this process
are the steadier figure (the engine uses every core, pymatgen one).

Agreement: per structure, max |engine - pymatgen| over the 4,250 points (0-100 scale), and the
stick lists (the peaks above pymatgen's cut-off): equal counts and max |Δ2θ|.
The last line of stdout is JSON.
"""

import json
import os
import sys
import time
import warnings

from absl import app
from absl import flags
import numpy as np
import pandas as pd

import _common
from xxact_jax import constants
from xxact_jax import xrd_engine
from xxact_jax.data import featurize
from xxact_jax.data import readers
from xxact_jax.data import xrd

MP36K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                     "mp_36k", "mp_36k.csv.xz")

_MODE = flags.DEFINE_enum("mode", "both", ["speed", "agreement", "both"], "What to measure.")
_SOURCE = flags.DEFINE_string("source", MP36K, "mp_36k CSV (cif column, n_sites column).")
_NUM = flags.DEFINE_integer("num", 1024, "Random structures.")
_LARGEST = flags.DEFINE_integer("largest", 20, "Agreement: also the N cells with most sites.")
_SEED = flags.DEFINE_integer("seed", 0, "Row sampling seed.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Speed: warm engine runs (the best is reported).")
_PYMATGEN_NUM = flags.DEFINE_integer(
    "pymatgen_num", 0, "Speed: time pymatgen on the first N structures only (0: all).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", xrd_engine.engine.DEFAULT_MAX_BATCH,
                                  "Most structures per device call.")
_SMOKE = flags.DEFINE_bool("smoke", False, "32 random structures and the 2 largest cells.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the JSON result here.")


def load_structures(source: str, num: int, largest: int, seed: int):
  """(material ids, Structures, positions of the largest cells): `num` random rows, then the
  `largest` cells by n_sites (those not already drawn)."""
  table = pd.read_csv(source, usecols=["material_id", "n_sites"])
  chosen = list(table.sample(n=min(num, len(table)), random_state=seed)["material_id"])
  largest_ids = list(table.nlargest(largest, "n_sites")["material_id"])
  big = [m for m in largest_ids if m not in chosen]
  wanted = {m: i for i, m in enumerate(chosen + big)}
  structures = [None] * len(wanted)
  _common.progress(f"reading {len(wanted)} records from {source}")
  for record in readers.iter_records(source):
    i = wanted.get(record.material_id)
    if i is not None:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures[i] = featurize.structure_from_payload(record.kind, record.payload)
  return chosen + big, structures, [wanted[m] for m in largest_ids]


def pymatgen_patterns(structures):
  """(patterns, sticks, wall s, CPU s) of pymatgen get_pattern + smear_sticks."""
  patterns, sticks = [], []
  wall, cpu = time.perf_counter(), time.process_time()
  last = wall
  for i, structure in enumerate(structures):
    x, y = featurize.stick_pattern(structure)
    patterns.append(xrd.smear_sticks(x, y))
    sticks.append((x, y))
    if time.perf_counter() - last > 30:
      last = time.perf_counter()
      _common.progress(f"  pymatgen {i + 1}/{len(structures)}, "
                       f"{(i + 1) / (last - wall):.1f}/s")
  return (np.stack(patterns), sticks, time.perf_counter() - wall, time.process_time() - cpu)


def engine_run(structures, max_batch: int, return_sticks: bool = False):
  """(result, wall s, CPU s) of one xrd_engine.simulate call over all structures."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = xrd_engine.simulate(structures, max_batch=max_batch, return_sticks=return_sticks)
  return result, time.perf_counter() - wall, time.process_time() - cpu


def call_shapes(structures, max_batch: int) -> dict:
  """How simulate() cuts this set into device calls: counts, rows per call, distinct shapes."""
  planned = xrd_engine.planning.plan_structures(
      [xrd_engine.structure_arrays(s, i) for i, s in enumerate(structures)],
      constants.CU_KA_LINES[0], (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX))
  calls = list(xrd_engine.engine._batches(planned, max_batch))  # pylint: disable=protected-access
  rows = [r for _, r, _ in calls]
  return {"device_calls": len(calls), "rows_per_call_max": max(rows),
          "rows_per_call_median": float(np.median(rows)),
          "structure_factor_shapes": len({(r,) + k for k, r, _ in calls}),
          "pattern_shapes": len({(r, k[1]) for k, r, _ in calls}),
          "reflections_per_structure_median": float(np.median([len(p.hkl) for p in planned])),
          "reflections_per_structure_max": int(max(len(p.hkl) for p in planned))}


def speed(structures, repeats: int, pymatgen_num: int, max_batch: int) -> dict:
  n = len(structures)
  _common.progress(f"engine: first call on {n} structures (compiles)")
  _, first_wall, first_cpu = engine_run(structures, max_batch)
  warm = []
  for r in range(repeats):
    _, wall, cpu = engine_run(structures, max_batch)
    warm.append((wall, cpu))
    _common.progress(f"  engine warm run {r + 1}/{repeats}: {wall:.2f} s wall, {cpu:.2f} CPU-s")
  best_wall = min(w for w, _ in warm)
  best_cpu = min(c for _, c in warm)
  subset = structures[:pymatgen_num] if pymatgen_num else structures
  _common.progress(f"pymatgen: {len(subset)} structures")
  _, _, pm_wall, pm_cpu = pymatgen_patterns(subset)
  engine_rate = n / best_wall
  pymatgen_rate = len(subset) / pm_wall
  cores = os.cpu_count() or 1
  return {
      "structures": n, "pymatgen_structures": len(subset),
      "engine_patterns_per_s": round(engine_rate, 1),
      "engine_cpu_ms_per_pattern": round(1000 * best_cpu / n, 3),
      "engine_first_call_s": round(first_wall, 1),
      "engine_compile_s_estimate": round(first_wall - best_wall, 1),
      "engine_warm_runs_wall_s": [round(w, 2) for w, _ in warm],
      "pymatgen_patterns_per_s_one_process": round(pymatgen_rate, 2),
      "pymatgen_cpu_ms_per_pattern": round(1000 * pm_cpu / len(subset), 2),
      "speedup_vs_one_pymatgen_process": round(engine_rate / pymatgen_rate, 1),
      "speedup_vs_pymatgen_on_all_cores_ideal": round(engine_rate / (cores * pymatgen_rate), 1),
      "speedup_cpu_time": round((pm_cpu / len(subset)) / (best_cpu / n), 1),
      "calls": call_shapes(structures, max_batch),
  }


def compare_sticks(engine_sticks, reference_sticks):
  """(equal counts, max |Δ2θ| and max |Δ height| (0-100 scale) when equal, number of sticks
  only one side has)."""
  (x, y), (ref_x, ref_y) = engine_sticks, reference_sticks
  if len(x) == len(ref_x):
    return (True, float(np.abs(x - ref_x).max(initial=0.0)),
            float(np.abs(y - ref_y).max(initial=0.0)), 0)
  unmatched = (np.sum(np.min(np.abs(x[:, None] - ref_x[None]), axis=1) > 1e-4)
               + np.sum(np.min(np.abs(ref_x[:, None] - x[None]), axis=1) > 1e-4))
  return False, float("nan"), float("nan"), int(unmatched)


def agreement(ids, structures, max_batch: int, largest: list) -> dict:
  _common.progress(f"engine on {len(structures)} structures")
  result, wall, _ = engine_run(structures, max_batch, return_sticks=True)
  _common.progress(f"  done in {wall:.1f} s (compiles included); pymatgen next")
  reference, reference_sticks, pm_wall, _ = pymatgen_patterns(structures)
  diff = np.abs(result.patterns.astype(np.float64) - reference).max(axis=1)
  counts_equal, positions, heights, unmatched = zip(*(compare_sticks(a, b) for a, b in
                                                      zip(result.sticks, reference_sticks)))
  positions, heights = np.asarray(positions), np.asarray(heights)
  worst = np.argsort(-diff)[:5]
  return {
      "structures": len(ids), "largest_cells": len(largest),
      "largest_cell_sites": [len(structures[i]) for i in largest],
      "max_abs_diff": float(diff.max()), "p99_abs_diff": float(np.percentile(diff, 99)),
      "median_abs_diff": float(np.median(diff)),
      "max_abs_diff_largest_cells": float(diff[largest].max()) if largest else None,
      "structures_over_0.1": int(np.sum(diff > 0.1)),
      "stick_lists_equal_length": int(np.sum(counts_equal)),
      "max_abs_position_diff_deg": float(np.nanmax(positions)) if np.any(counts_equal) else None,
      "structures_positions_over_1e-4": int(np.sum(positions > 1e-4)),
      "max_abs_stick_height_diff": float(np.nanmax(heights)) if np.any(counts_equal) else None,
      "sticks_unmatched_total": int(np.sum(unmatched)),
      "sticks_total": int(sum(len(s[0]) for s in reference_sticks)),
      "worst": [{"material_id": ids[i], "sites": len(structures[i]),
                 "max_abs_diff": float(diff[i])} for i in worst],
      "engine_wall_s_with_compiles": round(wall, 1), "pymatgen_wall_s": round(pm_wall, 1),
  }


def print_table(result: dict) -> None:
  if "speed" in result:
    s = result["speed"]
    print("\n| | patterns/s | CPU ms / pattern |\n|---|---|---|")
    print(f"| engine (JAX, all cores, {s['structures']} structures per call) | "
          f"{s['engine_patterns_per_s']} | {s['engine_cpu_ms_per_pattern']} |")
    print(f"| pymatgen get_pattern + smear_sticks (one process) | "
          f"{s['pymatgen_patterns_per_s_one_process']} | {s['pymatgen_cpu_ms_per_pattern']} |")
    print(f"\nspeed-up: {s['speedup_vs_one_pymatgen_process']}× one pymatgen process, "
          f"{s['speedup_vs_pymatgen_on_all_cores_ideal']}× pymatgen on all cores (ideal), "
          f"{s['speedup_cpu_time']}× in CPU time; first call {s['engine_first_call_s']} s "
          f"(compiles ≈ {s['engine_compile_s_estimate']} s); calls: {s['calls']}")
  if "agreement" in result:
    a = result["agreement"]
    print(f"\nagreement on {a['structures']} structures ({a['random']} random + "
          f"{a['largest_cells']} largest): max |Δ| {a['max_abs_diff']:.3g} "
          f"(p99 {a['p99_abs_diff']:.3g}), {a['structures_over_0.1']} over 0.1; "
          f"stick lists of equal length {a['stick_lists_equal_length']}/{a['structures']}, "
          f"max |Δ2θ| {a['max_abs_position_diff_deg']:.3g}°, "
          f"{a['sticks_unmatched_total']} of {a['sticks_total']} sticks unmatched")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  _common.progress(f"machine: {_common.machine()}; JAX backend {jax.default_backend()}")
  num, largest = (32, 2) if _SMOKE.value else (_NUM.value, _LARGEST.value)
  result = {"environment": _common.environment(), "command": " ".join(sys.argv)}
  result["environment"]["pymatgen"] = _common.software_versions(("pymatgen",))["pymatgen"]
  if _MODE.value in ("speed", "both"):
    _, structures, _ = load_structures(_SOURCE.value, num, 0, _SEED.value)
    result["speed"] = speed(structures, _REPEATS.value, _PYMATGEN_NUM.value, _MAX_BATCH.value)
  if _MODE.value in ("agreement", "both"):
    # Another seed, so that agreement does not reuse the speed sample's compiled shapes only.
    ids, structures, largest_at = load_structures(_SOURCE.value, num, largest, _SEED.value + 1)
    result["agreement"] = agreement(ids, structures, _MAX_BATCH.value, largest_at)
    result["agreement"]["random"] = num
  print_table(result)
  text = json.dumps(result)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
