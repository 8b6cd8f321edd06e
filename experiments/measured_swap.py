r"""Which difference between a measured scan and its simulated pattern costs the accuracy.

  python experiments/measured_swap.py --workdir=DIR [--workdir=DIR ...] \
      --measured=../shared/data/measured_xrd_dev/index.csv --output=OUT

For every scan of the index whose crystal structure lies beside it (`structures/<id>.cif.gz`,
94 of the 100 development scans), the structure is simulated by the package's engine (Cu Kα,
σ = 0.1°, as the training patterns) and the scan is prepared as `evaluate --measured` prepares
it. Each model then answers (crystal system, model alone: no reference lookup, no indexing) on:

- `simulated`: the ideal pattern of the structure;
- `simulated + range`: the same, with the grid points the scan did not cover marked unmeasured;
- `simulated + background`: the scan's SNIP background added (scaled as in the scan);
- `simulated + widths`: simulated again with the scan's median peak σ (read by the peak finder
  of models/peak_tokens.py) in place of the training patterns' 0.1°;
- `simulated + positions`: 2θ remapped by the cell strain and zero shift that best align it with
  the scan (a grid search on the correlation), i.e. the measured cell instead of the CIF's;
- `simulated + noise`: the scan's high-frequency residual (counting noise) added;
- `simulated + all five`: every effect above together: what is left between it and the scan is
  the relative intensities (texture, absorption), impurity phases and the Kα2 doublet;
- `measured − background`: the scan with its SNIP background removed;
- `measured`: the scan as `evaluate --measured` reads it.

Writes OUT/swap.json (per-scan answers) and OUT/swap.md (the table, also printed).

  python experiments/measured_swap.py --combine=OUT_A/swap.json --combine=OUT_B/swap.json \
      --routes=EVAL/predictions.jsonl --output=OUT

joins the answers of earlier runs (the same scans) and splits the table by the route each scan
takes on the default path (`route` in an `evaluate --measured` predictions.jsonl: the reference
answers the scans whose composition the training split holds, the indexed lattice or the model
the others), with, per model, how many scans the simulated pattern gets right and the measured
one wrong, and the reverse.
"""

import argparse
import gzip
import json
import os
import sys
import warnings

import numpy as np

from xxact_jax import constants
from xxact_jax import xrd_engine
from xxact_jax.data import featurize
from xxact_jax.inference import background
from xxact_jax.inference import inputs
from xxact_jax.inference.predictor import load
from xxact_jax.targets import CRYSTAL_SYSTEMS

VARIANTS = ("simulated", "simulated + range", "simulated + background", "simulated + widths",
            "simulated + positions", "simulated + noise", "simulated + all five",
            "measured − background", "measured")
UNMEASURED = constants.UNMEASURED_INTENSITY


def _scaled(x, covered):
  """Max 100 over the covered points, unmeasured elsewhere (the model's input convention)."""
  y = np.where(covered, np.maximum(x, 0.0), 0.0)
  peak = y.max()
  y = y * (100.0 / peak) if peak > 0 else y
  return np.where(covered, y, UNMEASURED).astype(np.float32)


def _gaussian_blur(x, sigma_points):
  if sigma_points <= 0.05:
    return x
  radius = int(np.ceil(4 * sigma_points))
  k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_points) ** 2)
  return np.convolve(x, k / k.sum(), mode="same")


def _remap(pattern, strain, zero):
  """The pattern with every reflection's d-spacing scaled by (1 + strain) and 2θ shifted by zero."""
  grid = constants.two_theta_grid()
  wavelength = constants.CU_KA_LINES[0]
  # Where does grid point 2θ' come from: d' = d (1 + strain), 2θ' = 2θ(d') + zero.
  source_d = wavelength / (2 * np.sin(np.deg2rad(np.clip(grid - zero, 0.1, 179.9)) / 2))
  source_d = source_d / (1 + strain)
  source = 2 * np.rad2deg(np.arcsin(np.clip(wavelength / (2 * source_d), -1, 1)))
  return np.interp(source, grid, pattern, left=0.0, right=0.0)


def align(simulated, target, covered):
  """(strain, zero) maximising the correlation of the remapped simulated pattern with target."""
  t = np.where(covered, target, 0.0)
  t = (t - t.mean()) / (t.std() + 1e-9)
  best = (-np.inf, 0.0, 0.0)
  for strain in np.arange(-0.03, 0.0301, 0.002):
    for zero in np.arange(-0.3, 0.301, 0.04):
      s = np.where(covered, _remap(simulated, strain, zero), 0.0)
      score = float(np.dot((s - s.mean()) / (s.std() + 1e-9), t))
      if score > best[0]:
        best = (score, strain, zero)
  return best[1], best[2]


def measured_width(measured):
  """The scan's median peak σ in degrees, less the peak finder's own smoothing."""
  from xxact_jax.models import peak_tokens  # pylint: disable=g-import-not-at-top
  _, _, width, valid = (np.asarray(a)[0] for a in peak_tokens.find_peaks(measured[None], 32))
  read = float(np.median(width[valid])) if valid.any() else constants.XRD_SIGMA
  smoothing = peak_tokens.SMOOTH_SIGMA_POINTS * constants.TWO_THETA_STEP
  return float(np.sqrt(max(read ** 2 - smoothing ** 2, 0.02 ** 2)))


def variants(simulated, resimulated, measured):
  """{variant: float32[4250] model input} for one scan (module docstring); `resimulated` is
  the structure's pattern at the scan's peak width."""
  covered = measured > UNMEASURED / 2
  m = np.where(covered, measured, 0.0).astype(np.float64)
  net = background.subtract(m, covered)
  bg = np.where(covered, m - net, 0.0)
  scale = net.max() / 100.0
  sim = simulated.astype(np.float64) * scale              # in the scan's units
  widths = resimulated.astype(np.float64) * scale
  strain, zero = align(widths, net, covered)
  positions = _remap(sim, strain, zero)
  noise = m - _gaussian_blur(m, 2.0)
  everything = _remap(widths, strain, zero) + bg + noise
  full = np.ones_like(covered)
  out = {
      "simulated": _scaled(sim, full),
      "simulated + range": _scaled(sim, covered),
      "simulated + background": _scaled(sim + bg, covered),
      "simulated + widths": _scaled(widths, full),
      "simulated + positions": _scaled(positions, full),
      "simulated + noise": _scaled(sim + noise, covered),
      "simulated + all five": _scaled(everything, covered),
      "measured − background": _scaled(net, covered),
      "measured": measured.astype(np.float32),
  }
  return {k: inputs.as_stored(v) for k, v in out.items()}, dict(
      strain=float(strain), zero_deg=float(zero))


def read_index(path):
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def measured_swap(workdirs, measured_index, output):
  root = os.path.dirname(os.path.abspath(measured_index))
  rows = [r for r in read_index(measured_index)
          if os.path.isfile(os.path.join(root, "structures", r["id"] + ".cif.gz"))]
  models = {w: load(w, reference="none", indexing=False) for w in workdirs}
  first = next(iter(models.values()))
  per_scan, inputs_by_variant, labels, species, fractions = [], {v: [] for v in VARIANTS}, [], [], []
  for i, row in enumerate(rows):
    with gzip.open(os.path.join(root, "structures", row["id"] + ".cif.gz"), "rt") as f:
      cif = f.read()
    try:
      structure = featurize.structure_from_payload("cif", cif)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp, fr, measured = first.prepare(row["formula"], os.path.join(root, row["file"]),
                                         float(row["wavelength_angstrom"]))
      sigma = measured_width(measured)
      simulated = xrd_engine.simulate([structure])[0]
      resimulated = xrd_engine.simulate([structure], sigma=sigma)[0]
    except Exception as e:  # pylint: disable=broad-except
      print(f"{row['id']}: skipped ({e})", file=sys.stderr)
      continue
    made, info = variants(simulated, resimulated, measured)
    info["measured_sigma_deg"] = sigma
    for v in VARIANTS:
      inputs_by_variant[v].append(made[v])
    species.append(sp)
    fractions.append(fr)
    labels.append(CRYSTAL_SYSTEMS.index(row["crystal_system"]))
    per_scan.append(dict(id=row["id"], crystal_system=row["crystal_system"], **info))
    print(f"[{i + 1}/{len(rows)}] {row['id']}: strain {info['strain']:+.3f}, zero "
          f"{info['zero_deg']:+.2f}°, σ {info['measured_sigma_deg']:.3f}°", file=sys.stderr)
  labels = np.asarray(labels)
  species, fractions = np.stack(species), np.stack(fractions)
  table = {}
  for workdir, model in models.items():
    name = os.path.basename(os.path.normpath(workdir))
    table[name] = {}
    for v in VARIANTS:
      probabilities = model.predict_arrays(species, fractions, np.stack(inputs_by_variant[v]),
                                           measured=v != "simulated")["crystal_system"]
      answers = probabilities.argmax(-1)
      table[name][v] = float((answers == labels).mean())
      for scan, answer in zip(per_scan, answers):
        scan.setdefault(name, {})[v] = CRYSTAL_SYSTEMS[int(answer)]
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "swap.json"), "w") as f:
    json.dump(dict(accuracy=table, scans=per_scan), f, indent=1)
  text = markdown(table, len(labels))
  with open(os.path.join(output, "swap.md"), "w") as f:
    f.write(text)
  print(text)
  return table


def markdown(table, count):
  lines = [f"Crystal-system accuracy, model alone, on the {count} development scans with a "
           "structure", "", "| input | " + " | ".join(table) + " |",
           "|---|" + "---|" * len(table)]
  for v in VARIANTS:
    lines.append(f"| {v} | " + " | ".join(f"{100 * table[n][v]:.1f} %" for n in table) + " |")
  return "\n".join(lines) + "\n"


def combine_by_route(swap_paths, predictions_path, output):
  """The tables of earlier runs joined, split by each scan's default-path route."""
  scans = {}
  for path in swap_paths:
    with open(path) as f:
      for scan in json.load(f)["scans"]:
        scans.setdefault(scan["id"], {}).update(scan)
  with open(predictions_path) as f:
    routes = {r["id"]: r.get("route") for r in map(json.loads, f)}
  missing = sorted(set(scans) - set(routes))
  if missing:
    raise SystemExit(f"{predictions_path}: no route for {len(missing)} scans, e.g. {missing[0]}")
  first = next(iter(scans.values()))
  models = [k for k, v in first.items() if isinstance(v, dict)]   # a model's answers per input
  groups = {"all": list(scans.values())}
  for route in ("reference", "indexing", "model"):
    groups[route] = [s for i, s in scans.items() if routes[i] == route]
  groups["indexing or model"] = groups["indexing"] + groups["model"]
  result, lines = {}, []
  for group, members in groups.items():
    if not members:
      continue
    table = {m: {v: float(np.mean([s[m][v] == s["crystal_system"] for s in members]))
                 for v in VARIANTS} for m in models}
    flips = {m: {"simulated right, measured wrong":
                 sum(s[m]["simulated"] == s["crystal_system"] != s[m]["measured"] for s in members),
                 "measured right, simulated wrong":
                 sum(s[m]["measured"] == s["crystal_system"] != s[m]["simulated"] for s in members)}
             for m in models}
    result[group] = dict(scans=len(members), accuracy=table, flips=flips)
    lines += [f"### Route: {group}", "", markdown(table, len(members))]
    lines += ["| flips | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for k in ("simulated right, measured wrong", "measured right, simulated wrong"):
      lines.append(f"| {k} | " + " | ".join(str(flips[m][k]) for m in models) + " |")
    lines.append("")
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "swap_by_route.json"), "w") as f:
    json.dump(result, f, indent=1)
  text = "\n".join(lines)
  with open(os.path.join(output, "swap_by_route.md"), "w") as f:
    f.write(text)
  print(text)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", action="append")
  parser.add_argument("--measured", help="index.csv of labelled scans")
  parser.add_argument("--combine", action="append", help="swap.json of an earlier run")
  parser.add_argument("--routes", help="predictions.jsonl of evaluate --measured (default path)")
  parser.add_argument("--output", required=True)
  args = parser.parse_args(argv)
  if args.combine:
    if not args.routes:
      parser.error("--combine needs --routes")
    combine_by_route(args.combine, args.routes, args.output)
  elif args.workdir and args.measured:
    measured_swap(args.workdir, args.measured, args.output)
  else:
    parser.error("give --workdir and --measured, or --combine and --routes")


if __name__ == "__main__":
  main()
