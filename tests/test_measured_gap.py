"""experiments/measured_gap.py on the embedded dataset and the fixture scans."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from xxact_jax import constants  # pylint: disable=g-import-not-at-top
from xxact_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
  spec = importlib.util.spec_from_file_location(
      "measured_gap", os.path.join(REPO, "experiments", "measured_gap.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_composition_key_ignores_scale():
  gap = _module()
  assert gap.composition_key({"Na": 1, "Cl": 1}) == gap.composition_key({"Cl": 0.5, "Na": 0.5})
  assert gap.composition_key({"Na": 2, "Cl": 1}) != gap.composition_key({"Na": 1, "Cl": 1})


def test_measured_gap_matches_and_scores(workdir, embedded_dataset, fixtures_dir, tmp_path):
  gap = _module()
  every = dataset_lib.open_dataset(embedded_dataset, None)
  row = every.read_batch([0])
  formula = "".join(f"{constants.ELEMENTS[int(z) - 1]}{f:.4f}"
                    for z, f in zip(row["species"][0], row["fractions"][0]) if z > 0)
  space_group = int(row["spacegroup_number"][0])
  system = constants.CRYSTAL_SYSTEMS[int(row["crystal_system"][0])]
  scan = os.path.join(fixtures_dir, "patterns", "Si_CuKa.xy")
  index = tmp_path / "index.csv"
  with open(index, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "file", "formula", "crystal_system", "spacegroup_number",
                     "wavelength_angstrom"])
    # The same composition and space group as dataset row 0: matched. Si with space group 1:
    # in no dataset row.
    writer.writerow(["same", scan, formula, system, space_group, ""])
    writer.writerow(["other", scan, "Si", "triclinic", 1, ""])
  out = tmp_path / "gap"
  results = gap.measured_gap([workdir], embedded_dataset, str(index), str(out), rows=12)
  assert results["scans"] == 2 and results["scans_matched"] == 1
  assert 0 < results["test_rows"] <= 12
  run = results["runs"][workdir]
  for name in (*gap.EFFECTS, "measured_all", "measured_matched", "simulated_matched",
               "measured_unmatched"):
    assert 0.0 <= run[name] <= 1.0, name
  # The ideal engine patterns reproduce the stored ones, so the model scores them the same.
  test = dataset_lib.open_dataset(embedded_dataset, "test")
  picked = np.sort(np.random.default_rng(0).choice(len(test), 12, replace=False))
  import xxact_jax  # pylint: disable=g-import-not-at-top
  stored = test.read_batch(picked)
  probabilities = xxact_jax.load(workdir).predict_arrays(
      stored["species"], stored["fractions"], stored["xrd"])["crystal_system"]
  if results["test_rows"] == 12:
    assert run["ideal"] == pytest.approx(
        float((probabilities.argmax(-1) == stored["crystal_system"]).mean()), abs=1 / 12 + 1e-9)
  assert json.loads((out / "gap.json").read_text())["runs"][workdir]["ideal"] == run["ideal"]
  assert f"| {os.path.basename(workdir)} |" in (out / "gap.md").read_text()
