"""XRD definition: smearing maths, peak position and width on real structures, stored records."""

import numpy as np
import pandas as pd
import pytest

from xxact_jax import constants
from xxact_jax.data import xrd

GRID = constants.two_theta_grid()


def dense_reference(two_theta, intensities, sigma=constants.XRD_SIGMA):
  """y = Σ I·exp(−(2θ−2θₖ)²/(2σ²)) over all grid points and sticks, max scaled to 100 (float64)."""
  y = (np.asarray(intensities)[None, :] *
       np.exp(-(GRID[:, None] - np.asarray(two_theta)[None, :]) ** 2 / (2 * sigma ** 2))).sum(1)
  return 100 * y / y.max()


def fwhm(pattern, centre_index):
  """Full width at half maximum of the peak at centre_index, linearly interpolated (degrees)."""
  half = pattern[centre_index] / 2
  left = centre_index
  while pattern[left] > half:
    left -= 1
  right = centre_index
  while pattern[right] > half:
    right += 1
  x_left = np.interp(half, [pattern[left], pattern[left + 1]], [GRID[left], GRID[left + 1]])
  x_right = np.interp(half, [pattern[right], pattern[right - 1]], [GRID[right], GRID[right - 1]])
  return x_right - x_left


def test_single_stick_position_height_and_width():
  pattern = xrd.smear_sticks([30.0], [7.0])
  assert pattern.shape == (4250,) and pattern.dtype == np.float32
  assert np.argmax(pattern) == 1250 and pattern.max() == pytest.approx(100)
  assert fwhm(pattern, 1250) == pytest.approx(2 * np.sqrt(2 * np.log(2)) * 0.1, abs=2e-3)


def test_matches_dense_sum_including_edges_and_overlaps():
  rng = np.random.default_rng(0)
  two_theta = np.concatenate([rng.uniform(5, 90, 60), [5.0, 5.003, 89.99, 40.0, 40.05]])
  intensities = rng.uniform(0.1, 100, two_theta.size)
  np.testing.assert_allclose(xrd.smear_sticks(two_theta, intensities),
                             dense_reference(two_theta, intensities), rtol=1e-5, atol=1e-5)


def test_bad_sticks():
  with pytest.raises(ValueError, match="no intensity"):
    xrd.smear_sticks([], [])
  with pytest.raises(ValueError, match="3 sticks"):
    xrd.smear_sticks([10, 20, 30], [1, 2])
  with pytest.raises(ValueError, match="non-finite"):
    xrd.smear_sticks([10, np.nan], [1, 2])


def _structure(fixtures_dir, material_id):
  from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top
  table = pd.read_csv(f"{fixtures_dir}/mp_small.csv.gz").set_index("material_id")
  return Structure.from_str(table.loc[material_id, "cif"], fmt="cif")


def test_si_first_peak_is_111_at_28_27(fixtures_dir):
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  features = featurize.featurize_structure(_structure(fixtures_dir, "mp-149"), 10)
  pattern = features["xrd"]
  first = np.flatnonzero(pattern > 5)[0]
  centre = first + np.argmax(pattern[first:first + 50])
  assert GRID[centre] == pytest.approx(28.27, abs=0.03)    # PBE lattice, (111)
  assert fwhm(pattern, centre) == pytest.approx(0.2355, abs=0.01)
  assert features["spacegroup_number"] == 227
  assert constants.CRYSTAL_SYSTEMS[features["crystal_system"]] == "cubic"
  np.testing.assert_array_equal(features["species"][:2], [14, 0])


def test_nacl_strongest_peak_is_200_from_bragg_law(fixtures_dir):
  from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  structure = _structure(fixtures_dir, "mp-22862")
  a = SpacegroupAnalyzer(structure).get_conventional_standard_structure().lattice.a
  wavelength = 1.54184  # Cu Kα (weighted Kα1/Kα2), as pymatgen's "CuKa"
  expected = 2 * np.degrees(np.arcsin(wavelength / (2 * a / 2)))
  pattern = featurize.featurize_structure(structure, 10)["xrd"]
  assert GRID[np.argmax(pattern)] == pytest.approx(expected, abs=0.02)
  assert pattern.max() == pytest.approx(100)


def test_stored_records_equal_independent_pymatgen_computation(embedded_dataset):
  """XRD read back from the dataset = XRDCalculator + dense smearing, within float16 rounding."""
  from pymatgen.analysis.diffraction.xrd import XRDCalculator  # pylint: disable=g-import-not-at-top
  from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import embedded  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  ds = open_dataset(embedded_dataset)
  table = pd.read_csv(embedded.SAMPLE_FILE).set_index("material_id")
  calculator = XRDCalculator(wavelength="CuKa")
  for i in np.random.default_rng(0).choice(len(ds), 4, replace=False):
    record = ds[int(i)]
    structure = Structure.from_str(table.loc[record["material_id"], "cif"], fmt="cif")
    sticks = calculator.get_pattern(structure, two_theta_range=(5, 90))
    reference = dense_reference(sticks.x, sticks.y)
    stored = record["xrd"].astype(np.float64)
    assert record["xrd"].dtype == np.float16
    np.testing.assert_allclose(stored, reference, rtol=2 ** -11, atol=1e-4)
