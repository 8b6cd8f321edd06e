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

KEEP_BACKGROUND = resample.Preprocessing(background="none")


def test_cu_pattern_lands_on_grid_with_unmeasured_mark_outside_and_warning():
  with pytest.warns(resample.PartialCoverageWarning, match="marked unmeasured"):
    x = resample.load_measured_pattern(fixture("Si_CuKa.xy"), preprocessing=KEEP_BACKGROUND)
  grid = constants.two_theta_grid()
  mark = constants.UNMEASURED_INTENSITY
  assert x.shape == (constants.NUM_XRD_POINTS,) and x.dtype == np.float32
  assert x.max() == pytest.approx(100.0)
  assert np.all(x[grid < 10.0 - 1e-9] == mark) and np.all(x[grid > 80.0 + 1e-9] == mark)
  assert np.all(x[(grid > 10.0) & (grid < 80.0)] > 0)  # background is kept
  assert_peaks_at(x, reference_sticks("mp-149"))


def test_mo_xrdml_is_converted_to_cu_scale():
  with pytest.warns(resample.PartialCoverageWarning):
    x = resample.load_measured_pattern(fixture("Al2O3_MoKa.xrdml"))
  # The file states Mo Kα; its peaks must sit where Cu Kα puts them.
  assert_peaks_at(x, reference_sticks("mp-1143", "CuKa"))
  # 4° at Mo is about 8.7° at Cu: the grid below is marked unmeasured.
  grid = constants.two_theta_grid()
  assert np.all(x[grid < 8.6] == constants.UNMEASURED_INTENSITY)
  assert np.all(x[grid > 8.8] >= 0)


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


# Documented results for unusual but valid scans, and scans too sparse to use.

def write_scan(tmp_path, name, two_theta, intensity):
  path = tmp_path / name
  path.write_text("".join(f"{t:.4f} {i:.3f}\n" for t, i in zip(two_theta, intensity)))
  return str(path)


def peaks(two_theta, centres, heights, sigma=0.05):
  return sum(h * np.exp(-0.5 * ((two_theta - c) / sigma) ** 2) for c, h in zip(centres, heights))


def test_descending_scan_is_reversed(tmp_path):
  t = np.arange(5.0, 90.0, 0.02)
  y = peaks(t, [28.44, 47.3], [100, 60]) + 1.0
  up = resample.load_measured_pattern(write_scan(tmp_path, "up.xy", t, y))
  down = resample.load_measured_pattern(write_scan(tmp_path, "down.xy", t[::-1], y[::-1]))
  np.testing.assert_array_equal(up, down)


def test_too_few_points_and_coarse_steps_are_errors(tmp_path):
  t = np.linspace(20.0, 30.0, 10)
  with pytest.raises(PatternError, match=r"ten\.xy.*only 10 points"):
    resample.load_measured_pattern(write_scan(tmp_path, "ten.xy", t, t))
  t = np.arange(5.0, 90.0, 0.5)
  with pytest.raises(PatternError, match=r"coarse\.xy.*step 0\.5°"):
    resample.load_measured_pattern(write_scan(tmp_path, "coarse.xy", t, t))


def test_a_narrow_scan_is_refused_unless_asked(tmp_path):
  t = np.arange(40.0, 46.0, 0.02)
  scan = write_scan(tmp_path, "narrow.xy", t, peaks(t, [42.0], [100]) + 1)
  with pytest.raises(PatternError, match=r"narrow\.xy.*covers only 6\.0°.*at least 10°"):
    resample.load_measured_pattern(scan)
  with pytest.warns(resample.PartialCoverageWarning):
    x = resample.load_measured_pattern(
        scan, preprocessing=resample.Preprocessing(min_coverage_deg=5.0))
  assert (x == constants.UNMEASURED_INTENSITY).mean() > 0.9


def test_negative_counts_are_clipped_to_zero(tmp_path):
  t = np.arange(5.0, 90.0, 0.02)
  y = peaks(t, [28.44], [100]) - 5.0        # an over-subtracted background
  x = resample.load_measured_pattern(write_scan(tmp_path, "neg.xy", t, y), preprocessing=KEEP_BACKGROUND)
  assert x.min() == 0.0 and x.max() == pytest.approx(100.0)
  with pytest.raises(PatternError, match=r"allneg\.xy.*no positive intensity"):
    resample.load_measured_pattern(write_scan(tmp_path, "allneg.xy", t, -y - 10))


# Kα2 stripping and the preprocessing options.

def test_strip_ka2_recovers_the_ka1_pattern():
  _, ka1, ka2 = wavelengths.ANODE_WAVELENGTHS["Cu"]
  t = np.arange(5.0, 120.0, 0.01)
  centres = np.array([20.0, 28.44, 47.3, 56.12, 88.0, 110.0])     # Kα1 reflections
  heights = np.array([40.0, 100.0, 60.0, 35.0, 20.0, 15.0])
  companions = 2 * np.rad2deg(np.arcsin(np.sin(np.deg2rad(centres / 2)) * ka2 / ka1))
  alpha1 = peaks(t, centres, heights)
  measured = alpha1 + peaks(t, companions, heights / 2)
  # The doublet is resolved at high angle: the companion sits where Bragg's law puts it.
  assert companions[-1] - centres[-1] > 0.3
  stripped = resample.strip_ka2(t, measured, ka1, ka2)
  assert np.abs(stripped - alpha1).max() < 0.02 * heights.max()
  assert np.abs(measured - alpha1).max() > 0.4 * heights[-1]


def test_strip_ka2_moves_the_pattern_to_the_ka1_scale(tmp_path):
  _, ka1, ka2 = wavelengths.ANODE_WAVELENGTHS["Cu"]
  t = np.arange(5.0, 90.0, 0.01)
  centre = 80.0
  companion = 2 * np.rad2deg(np.arcsin(np.sin(np.deg2rad(centre / 2)) * ka2 / ka1))
  scan = write_scan(tmp_path, "cu.xy", t, peaks(t, [centre, companion], [100, 50]) + 0.1)
  options = resample.Preprocessing(background="none", strip_ka2=True)
  x = resample.load_measured_pattern(scan, wavelength=ka1, preprocessing=options)
  grid = constants.two_theta_grid()
  # One peak left, at the Kα1 reflection's angle on the Cu Kα-mean scale of the grid.
  expected = float(wavelengths.to_cu_two_theta(np.array([centre]), ka1)[0])
  assert abs(grid[np.argmax(x)] - expected) <= constants.TWO_THETA_STEP
  assert x[np.abs(grid - (companion + expected - centre)) < 0.03].max() < 5.0


def test_strip_ka2_skips_a_wavelength_without_a_doublet(tmp_path):
  assert wavelengths.doublet_of(wavelengths.CU_KA) == wavelengths.ANODE_WAVELENGTHS["Cu"][1:]
  assert wavelengths.doublet_of(0.70930) == wavelengths.ANODE_WAVELENGTHS["Mo"][1:]
  assert wavelengths.doublet_of(0.4959) is None                     # synchrotron
  assert wavelengths.doublet_of(wavelengths.ANODE_WAVELENGTHS["Cu"][2]) is None
  t = np.arange(5.0, 40.0, 0.005)
  scan = write_scan(tmp_path, "sync.xy", t, peaks(t, [10.0, 12.0], [100, 50]) + 0.1)
  with pytest.warns(resample.PreprocessingWarning, match=r"sync\.xy.*not stripped"):
    resample.load_measured_pattern(scan, wavelength=0.4959,
                                   preprocessing=resample.Preprocessing(strip_ka2=True))


def test_snip_removes_a_smooth_background_and_keeps_the_peaks(tmp_path):
  t = np.arange(5.0, 90.0, 0.02)
  y = peaks(t, [28.44, 47.3], [100, 60], sigma=0.08) + 30 * np.exp(-(t - 5) / 15) + 10
  scan = write_scan(tmp_path, "bg.xy", t, y)
  kept = resample.load_measured_pattern(scan, preprocessing=KEEP_BACKGROUND)
  removed = resample.load_measured_pattern(scan, preprocessing=resample.Preprocessing("snip"))
  grid = constants.two_theta_grid()
  far = (np.abs(grid - 28.44) > 1) & (np.abs(grid - 47.3) > 1)
  assert kept[far].min() > 5 and removed[far].max() < 2
  assert grid[np.argmax(removed)] == pytest.approx(28.44, abs=0.02)


def test_preprocessing_options_are_checked():
  with pytest.raises(ValueError, match="background must be one of"):
    resample.Preprocessing(background="rolling_ball")


# Redrawing a scan's reflections as the training patterns' Gaussians (inference/peaks.py).

def test_redrawing_an_ideal_pattern_gives_it_back():
  from xxact_jax.data import xrd as xrd_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import peaks as peaks_lib  # pylint: disable=g-import-not-at-top
  ideal = xrd_lib.smear_sticks([20.0, 30.05, 45.0, 60.013], [100, 40, 70, 10])
  redrawn = peaks_lib.render(ideal, np.ones(ideal.shape, bool))
  assert np.abs(redrawn - ideal).max() < 0.2


def test_redrawing_a_broad_noisy_scan_finds_its_reflections_and_not_its_noise(tmp_path):
  rng = np.random.default_rng(0)
  t = np.arange(10.0, 80.0, 0.02)
  centres, heights = [21.3, 33.71, 47.05, 62.4], [100, 55, 30, 12]
  widths = 0.08 + 0.002 * (np.asarray(centres) - 10)     # broadening grows with 2θ
  y = sum(h * np.exp(-0.5 * ((t - c) / w) ** 2) for c, h, w in zip(centres, heights, widths))
  y = y + 20 * np.exp(-(t - 10) / 12) + 5 + rng.normal(0, 1.0, t.size)
  scan = write_scan(tmp_path, "broad.xy", t, y)
  x = resample.load_measured_pattern(scan, preprocessing=resample.Preprocessing(redraw_peaks=True))
  grid = constants.two_theta_grid()
  measured = x >= 0
  assert (x[~measured] == constants.UNMEASURED_INTENSITY).all()
  assert grid[measured][0] == pytest.approx(10.0, abs=0.03)
  # One σ = 0.1° Gaussian per reflection, at its angle, with the reflection's area.
  from xxact_jax.inference import peaks as peaks_lib  # pylint: disable=g-import-not-at-top
  found, areas = peaks_lib.find_peaks(x[measured])
  positions = grid[measured][0] + constants.TWO_THETA_STEP * found
  np.testing.assert_allclose(positions, centres, atol=constants.TWO_THETA_STEP)   # one grid step
  expected = np.asarray(heights) * widths
  np.testing.assert_allclose(areas / areas.max(), expected / expected.max(), atol=0.05)
  far = np.min(np.abs(grid[:, None] - np.asarray(centres)[None, :]), axis=1) > 0.6
  assert x[far & measured].max() < 0.5                          # background and noise gone


def test_a_scan_of_noise_alone_cannot_be_redrawn(tmp_path):
  t = np.arange(10.0, 80.0, 0.02)
  flat = np.full(t.size, 50.0)
  scan = write_scan(tmp_path, "flat.xy", t, flat)
  with pytest.raises(PatternError, match=r"flat\.xy.*cannot redraw its peaks"):
    resample.load_measured_pattern(scan, preprocessing=resample.Preprocessing(redraw_peaks=True))
