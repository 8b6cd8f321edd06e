"""The shipped model's predictions are pinned: on a fixed mp_36k sample (32 CIFs of its validation
split, tests/fixtures/predictions/mp36k_sample.csv.gz) and on the 100 measured development scans
(../shared/data/measured_xrd_dev, skipped where absent), `xxact_jax.load().predict` must give the
JSON recorded in tests/fixtures/predictions/expected.json.

On a machine like the one that recorded them (same CPU model, jax, jaxlib and numpy versions)
the JSON must be byte-identical: a refactoring that changes any computation shows here. Elsewhere
float32 results may differ in their last bits, so numbers are compared with a tolerance and the
answers (classes, routes) must agree on all but near-ties.

Record again, after a change that is meant to move predictions (a new shipped model):
  XXACT_RECORD_PREDICTIONS=1 python -m pytest -q tests/test_prediction_fixture.py
"""

import csv
import gzip
import importlib.metadata
import json
import math
import os

import pytest

from xxact_jax.inference import pretrained

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "predictions")
EXPECTED = os.path.join(FIXTURES, "expected.json")
MEASURED_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data",
                            "measured_xrd_dev")
RECORD = bool(os.environ.get("XXACT_RECORD_PREDICTIONS"))
# Answers that may flip between CPUs: of the records, this share at most (near-tied classes).
ANSWER_FLIPS = 0.03


def machine() -> dict:
  """What decides float32 results bit for bit: the CPU, the numerical libraries, XLA's flags."""
  cpu = ""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 "")
  versions = {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "numpy")}
  return {"cpu": cpu, **versions, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _mp36k_sample() -> list[dict]:
  with gzip.open(os.path.join(FIXTURES, "mp36k_sample.csv.gz"), "rt", newline="") as f:
    return list(csv.DictReader(f))


def _measured_scans() -> list[dict]:
  index = os.path.join(MEASURED_DIR, "index.csv")
  if not os.path.isfile(index):
    return []
  with open(index, newline="") as f:
    return list(csv.DictReader(f))


def _canonical(out) -> str:
  return json.dumps(out, sort_keys=True)


@pytest.fixture(scope="module")
def shipped():
  if not pretrained.shipped_dirs() or os.environ.get(pretrained.ENVIRONMENT_VARIABLE):
    pytest.skip("no shipped model in xxact_jax/pretrained/")
  import xxact_jax  # pylint: disable=g-import-not-at-top
  return xxact_jax.load()


def _predictions(predictor) -> dict:
  out = {"mp36k": {}, "measured": {}}
  for row in _mp36k_sample():
    out["mp36k"][row["material_id"]] = json.loads(_canonical(predictor.predict(cif=row["cif"])))
  for row in _measured_scans():
    wavelength = float(row["wavelength_angstrom"]) if row["wavelength_angstrom"] else None
    prediction = predictor.predict(row["formula"], os.path.join(MEASURED_DIR, row["file"]),
                                   wavelength)
    out["measured"][row["id"]] = json.loads(_canonical(prediction))
  return out


def _leaves(tree, path=""):
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from _leaves(tree[k], f"{path}/{k}")
  elif isinstance(tree, list):
    for i, v in enumerate(tree):
      yield from _leaves(v, f"{path}[{i}]")
  else:
    yield path, tree


def _close(a, b) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
      return False
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3)
  return a == b


def test_shipped_predictions_are_reproduced(shipped):
  got = _predictions(shipped)
  if RECORD:
    with open(EXPECTED, "w") as f:
      json.dump({"about": __doc__.split("\n\n")[0], "machine": machine(), **got}, f, indent=1,
                sort_keys=True)
    pytest.skip(f"recorded {EXPECTED}")
  with open(EXPECTED) as f:
    expected = json.load(f)
  assert set(got["mp36k"]) == set(expected["mp36k"])
  if not got["measured"]:
    expected["measured"] = {}     # the development scans are absent here
  assert set(got["measured"]) == set(expected["measured"])
  records = [(group, name) for group in ("mp36k", "measured") for name in expected[group]]
  if machine() == expected["machine"]:
    differ = [f"{g}/{n}" for g, n in records
              if _canonical(got[g][n]) != _canonical(expected[g][n])]
    assert not differ, f"predictions changed on the recording machine: {differ}"
    return
  # Another CPU or library version: the same predictions up to float32 rounding.
  flipped = []
  for g, n in records:
    a, b = dict(_leaves(got[g][n])), dict(_leaves(expected[g][n]))
    if a.keys() != b.keys() or not all(_close(a[k], b[k]) for k in a):
      flipped.append(f"{g}/{n}")
  assert len(flipped) <= ANSWER_FLIPS * len(records), flipped
