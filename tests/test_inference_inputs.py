"""User inputs -> model arrays, without a model: compositions, patterns, CIFs, CSV rows."""

import os

import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax import predict as predict_cli
from xxact_jax.inference import inputs
from xxact_jax.inference.errors import InputError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "patterns")


def test_compositions_from_formula_dict_and_pymatgen():
  from pymatgen.core import Composition  # pylint: disable=g-import-not-at-top
  species, fractions = inputs.encode("Fe2O3", 6)
  np.testing.assert_array_equal(species, [8, 26, 0, 0, 0, 0])
  np.testing.assert_allclose(fractions, [0.6, 0.4, 0, 0, 0, 0])
  for other in ({"Fe": 4, "O": 6}, Composition("Fe2O3")):
    s, f = inputs.encode(other, 6)
    np.testing.assert_array_equal(s, species)
    np.testing.assert_allclose(f, fractions, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
    inputs.encode("Xx2O3", 6)
  with pytest.raises(ValueError, match="expected a formula string"):
    inputs.encode(42, 6)


def test_grid_array_and_two_theta_pairs():
  grid = constants.two_theta_grid()
  peak = np.exp(-0.5 * ((grid - 30.0) / 0.1) ** 2) * 7.0
  on_grid = inputs.pattern_on_grid(peak)
  assert on_grid.max() == pytest.approx(100.0) and np.argmax(on_grid) == np.argmax(peak)
  resampled = inputs.pattern_on_grid((grid, peak))
  np.testing.assert_allclose(resampled, on_grid, atol=1e-4)
  with pytest.raises(InputError, match="4250 points"):
    inputs.pattern_on_grid(np.ones(100))
  with pytest.raises(InputError, match="NaN or Inf"):
    inputs.pattern_on_grid((grid, np.where(grid > 50, np.nan, 1.0)))
  with pytest.raises(InputError, match="2θ must increase"):
    inputs.pattern_on_grid((grid[::-1], peak))
  # NaN points of a grid array mark a range the scan did not cover.
  partial = np.where(grid > 60.0, np.nan, peak)
  marked = inputs.pattern_on_grid(partial)
  assert (marked[grid > 60.0] == constants.UNMEASURED_INTENSITY).all()
  np.testing.assert_allclose(marked[grid <= 60.0], on_grid[grid <= 60.0], atol=1e-4)
  with pytest.raises(InputError, match="no positive intensity"):
    inputs.pattern_on_grid(np.full(constants.NUM_XRD_POINTS, np.nan))


def test_stored_precision_is_float16():
  x = np.linspace(0, 100, 4250, dtype=np.float32)
  np.testing.assert_array_equal(inputs.as_stored(x), x.astype(np.float16).astype(np.float32))


def test_cif_featurisation_and_bad_cif(tmp_path):
  features = inputs.featurize_cif(os.path.join(FIXTURES, "NaCl.cif"), 10)
  assert features["formula"] == "NaCl"
  assert sorted(features["species"][:2]) == [11, 17]
  assert features["xrd"].shape == (constants.NUM_XRD_POINTS,)
  bad = tmp_path / "broken.cif"
  bad.write_text("data_x\n_cell_length_a 1\nloop_\n_atom_site_label\n")
  with pytest.raises(InputError, match=r"broken\.cif: cannot use this CIF"):
    inputs.featurize_cif(str(bad), 10)
  with pytest.raises(InputError, match="no such file"):
    inputs.featurize_cif(str(tmp_path / "absent.cif"), 10)


def test_csv_rows_resolve_paths_and_name_bad_lines(tmp_path):
  table = tmp_path / "rows.csv"
  table.write_text("id,formula,xrd_file,wavelength\na,Si,scan.xy,\nb,NaCl,/abs/scan.xy,Mo\n")
  samples = predict_cli.samples_from_csv(str(table), default_wavelength="Cu")
  assert samples[0].xrd == str(tmp_path / "scan.xy") and samples[0].wavelength == "Cu"
  assert samples[1].xrd == "/abs/scan.xy" and samples[1].wavelength == "Mo"
  assert samples[1].source == {"input": str(table), "line": 3, "id": "b", "formula": "NaCl",
                               "xrd_file": "/abs/scan.xy"}
  table.write_text("formula,xrd_file\nSi,scan.xy\nNaCl,\n")
  with pytest.raises(InputError, match=r"rows\.csv, line 3, field 'xrd_file': is empty"):
    predict_cli.samples_from_csv(str(table))
  table.write_text("name,pattern\nSi,scan.xy\n")
  with pytest.raises(InputError, match="needs columns formula and xrd_file, or cif"):
    predict_cli.samples_from_csv(str(table))


def test_imports_stay_light():
  """`import xxact_jax` pulls in neither JAX nor pymatgen; the predict path never pymatgen."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = (
      "import sys, xxact_jax\n"
      "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'pymatgen', 'flax'})\n"
      "assert heavy() == [], heavy()\n"
      "import xxact_jax.predict, xxact_jax.inference.predictor, xxact_jax.report.__main__\n"
      "from xxact_jax import load\n"
      "assert 'pymatgen' not in heavy(), heavy()\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)
  assert result.returncode == 0, result.stderr
