"""Measured-pattern readers, wavelength conversion and resampling onto the model grid."""

import os
import warnings

import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax.inference import patterns
from xxact_jax.inference import resample
from xxact_jax.inference import wavelengths
from xxact_jax.inference.errors import PatternError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "patterns")
# The shared data folder beside the repository, where present (tests that need it skip otherwise).
MP36K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                     "mp_36k", "mp_36k.csv.xz")


def fixture(name):
  return os.path.join(FIXTURES, name)


def reference_sticks(cif_material, wavelength="CuKa"):
  """pymatgen reflections (Cu Kα unless stated) of the structure a fixture was made from."""
  pd = pytest.importorskip("pandas")
  xrd = pytest.importorskip("pymatgen.analysis.diffraction.xrd")
  from pymatgen.core import Structure
  if not os.path.exists(MP36K):
    pytest.skip(f"{MP36K} (the shared mp_36k data) is not present")
  df = pd.read_csv(MP36K, usecols=["material_id", "cif"]).set_index("material_id")
  structure = Structure.from_str(df.loc[cif_material, "cif"], fmt="cif")
  pattern = xrd.XRDCalculator(wavelength=wavelength).get_pattern(
      structure, two_theta_range=(5, 90))
  return np.asarray(pattern.x), np.asarray(pattern.y)


def assert_peaks_at(resampled, sticks, min_height=30.0, tolerance=0.05):
  grid = constants.two_theta_grid()
  positions, heights = sticks
  checked = 0
  for position, height in zip(positions, heights):
    if height < min_height or not 5.5 < position < 89.5:
      continue
    window = np.abs(grid - position) < 0.3
    found = grid[window][np.argmax(resampled[window])]
    assert abs(found - position) < tolerance, (position, found)
    checked += 1
  assert checked >= 2


# Wavelengths.

def test_anode_names_match_pymatgen_table():
  xrd = pytest.importorskip("pymatgen.analysis.diffraction.xrd")
  for anode in wavelengths.ANODE_WAVELENGTHS:
    assert wavelengths.parse_wavelength(anode) == pytest.approx(xrd.WAVELENGTHS[anode + "Ka"])
    assert wavelengths.parse_wavelength(anode.lower() + "ka1") == pytest.approx(
        xrd.WAVELENGTHS[anode + "Ka1"])
    assert wavelengths.parse_wavelength(anode + " Kα2") == pytest.approx(
        xrd.WAVELENGTHS[anode + "Ka2"])


def test_numeric_wavelengths_and_default():
  assert wavelengths.parse_wavelength("0.7107") == pytest.approx(0.7107)
  assert wavelengths.parse_wavelength(1.5406) == pytest.approx(1.5406)
  assert wavelengths.parse_wavelength(None) == wavelengths.CU_KA


@pytest.mark.parametrize("bad", ["Xx", "Cu Kb", "copper", "-1", "50", "nan"])
def test_bad_wavelength_is_named(bad):
  with pytest.raises(ValueError, match="wavelength"):
    wavelengths.parse_wavelength(bad)


def test_bragg_conversion_preserves_d_spacing():
  two_theta_mo = np.array([10.0, 20.0, 30.0, 40.0])
  mo = wavelengths.parse_wavelength("Mo")
  two_theta_cu = wavelengths.to_cu_two_theta(two_theta_mo, mo)
  d_mo = mo / (2 * np.sin(np.deg2rad(two_theta_mo / 2)))
  d_cu = wavelengths.CU_KA / (2 * np.sin(np.deg2rad(two_theta_cu / 2)))
  np.testing.assert_allclose(d_cu, d_mo, rtol=1e-12)
  assert np.all(two_theta_cu > two_theta_mo)
  # 80° with Mo needs sin θ > 1 at Cu: unreachable.
  assert np.isnan(wavelengths.to_cu_two_theta(np.array([80.0]), mo))[0]
  np.testing.assert_allclose(
      wavelengths.to_cu_two_theta(two_theta_mo, wavelengths.CU_KA), two_theta_mo)


# Readers.

def test_xy_reader_skips_header_and_comments():
  pattern = patterns.read_pattern(fixture("Si_CuKa.xy"))
  assert pattern.two_theta[0] == pytest.approx(10.0)
  assert pattern.two_theta[-1] == pytest.approx(80.0)
  assert pattern.two_theta.size == pattern.intensity.size == 3501
  assert pattern.wavelength is None


def test_csv_and_xye_read_the_same_scan():
  csv = patterns.read_pattern(fixture("NaCl_CuKa.csv"))
  xye = patterns.read_pattern(fixture("NaCl_CuKa.xye"))
  np.testing.assert_allclose(csv.two_theta, xye.two_theta)
  np.testing.assert_allclose(csv.intensity, xye.intensity)


def test_xrdml_start_end_positions_and_counts():
  pattern = patterns.read_pattern(fixture("Al2O3_MoKa.xrdml"))
  assert pattern.two_theta[0] == pytest.approx(4.0)
  assert pattern.two_theta[-1] == pytest.approx(40.0)
  np.testing.assert_allclose(np.diff(pattern.two_theta), 0.02, atol=1e-9)
  assert pattern.wavelength == pytest.approx(wavelengths.parse_wavelength("Mo"), abs=1e-5)


def test_xrdml_list_positions_and_intensities():
  pattern = patterns.read_pattern(fixture("TiO2_CuKa_list.xrdml"))
  assert pattern.two_theta[0] == pytest.approx(20.0)
  assert pattern.two_theta.size == pattern.intensity.size == 1401
  assert pattern.wavelength == pytest.approx(wavelengths.CU_KA, abs=1e-4)


# Resampling onto the model grid.

def test_cu_pattern_lands_on_grid_with_zeros_outside_and_warning():
  with pytest.warns(resample.PartialCoverageWarning, match="set to zero"):
    x = resample.load_measured_pattern(fixture("Si_CuKa.xy"))
  grid = constants.two_theta_grid()
  assert x.shape == (constants.NUM_XRD_POINTS,) and x.dtype == np.float32
  assert x.max() == pytest.approx(100.0)
  assert np.all(x[grid < 10.0 - 1e-9] == 0) and np.all(x[grid > 80.0 + 1e-9] == 0)
  assert np.all(x[(grid > 10.0) & (grid < 80.0)] > 0)  # background is kept
  assert_peaks_at(x, reference_sticks("mp-149"))


def test_mo_xrdml_is_converted_to_cu_scale():
  with pytest.warns(resample.PartialCoverageWarning):
    x = resample.load_measured_pattern(fixture("Al2O3_MoKa.xrdml"))
  # The file states Mo Kα; its peaks must sit where Cu Kα puts them.
  assert_peaks_at(x, reference_sticks("mp-1143", "CuKa"))
  # 4° at Mo is about 8.7° at Cu: the grid below is zero.
  grid = constants.two_theta_grid()
  assert np.all(x[grid < 8.6] == 0) and np.all(x[grid > 8.8] > 0)


def test_explicit_wavelength_overrides_file():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", resample.PartialCoverageWarning)
    as_mo = resample.load_measured_pattern(fixture("Si_CuKa.xy"), wavelength="Mo")
    as_cu = resample.load_measured_pattern(fixture("Si_CuKa.xy"))
  grid = constants.two_theta_grid()
  assert grid[np.argmax(as_mo)] > grid[np.argmax(as_cu)] + 20


# Bad input: a clear error naming the file, the line and the problem.

def write_modified(tmp_path, source, line_number, new_line, name="bad.xy"):
  lines = open(fixture(source)).read().splitlines()
  lines[line_number - 1] = new_line
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_nan_is_named_with_line(tmp_path):
  path = write_modified(tmp_path, "Si_CuKa.xy", 100, "11.9400 nan")
  with pytest.raises(PatternError, match=r"bad\.xy, line 100.*intensity.*nan"):
    patterns.read_pattern(path)


def test_non_numeric_row_is_named_with_line(tmp_path):
  path = write_modified(tmp_path, "Si_CuKa.xy", 50, "10.9400 12x")
  with pytest.raises(PatternError, match=r"line 50: expected two numbers"):
    patterns.read_pattern(path)


def test_single_column_row_is_rejected(tmp_path):
  path = write_modified(tmp_path, "Si_CuKa.xy", 60, "11.1400")
  with pytest.raises(PatternError, match=r"line 60"):
    patterns.read_pattern(path)


def test_decreasing_two_theta_is_named_with_line(tmp_path):
  path = write_modified(tmp_path, "Si_CuKa.xy", 200, "13.0000 500")
  with pytest.raises(PatternError, match=r"line 200.*2θ must increase"):
    patterns.read_pattern(path)


def test_pattern_entirely_outside_grid(tmp_path):
  path = tmp_path / "high.xy"
  path.write_text("".join(f"{95 + 0.1 * i:.2f} {i % 7 + 1}\n" for i in range(100)))
  with pytest.raises(PatternError, match=r"high\.xy.*entirely outside"):
    resample.load_measured_pattern(str(path))


def test_mo_pattern_beyond_cu_reach_is_outside(tmp_path):
  path = tmp_path / "mo_high.xy"
  path.write_text("".join(f"{70 + 0.1 * i:.2f} {i % 7 + 1}\n" for i in range(100)))
  with pytest.raises(PatternError, match="entirely outside"):
    resample.load_measured_pattern(str(path), wavelength="Mo")


def test_missing_file_unknown_suffix_and_empty(tmp_path):
  with pytest.raises(PatternError, match="no such file"):
    patterns.read_pattern(str(tmp_path / "absent.xy"))
  odd = tmp_path / "scan.raw"
  odd.write_bytes(b"\x00\x01")
  with pytest.raises(PatternError, match="unknown pattern format"):
    patterns.read_pattern(str(odd))
  empty = tmp_path / "empty.txt"
  empty.write_text("# nothing here\n2theta intensity\n")
  with pytest.raises(PatternError, match="no numeric"):
    patterns.read_pattern(str(empty))


def test_xrdml_problems_are_named(tmp_path):
  text = open(fixture("TiO2_CuKa_list.xrdml")).read()
  broken = tmp_path / "broken.xrdml"
  broken.write_text(text[: len(text) // 2])
  with pytest.raises(PatternError, match=r"broken\.xrdml: not valid XML"):
    patterns.read_pattern(str(broken))
  short = tmp_path / "short.xrdml"
  short.write_text(text.replace("<listPositions>20.0000 ", "<listPositions>"))
  with pytest.raises(PatternError, match="listPositions but"):
    patterns.read_pattern(str(short))
  word = tmp_path / "word.xrdml"
  word.write_text(text.replace("<intensities unit=\"counts\">", "<intensities unit=\"counts\">abc "))
  with pytest.raises(PatternError, match="field 'intensities'.*not a number"):
    patterns.read_pattern(str(word))
