"""A measured scan re-drawn as the ideal pattern the models train on: its reflections found,
then smeared as Gaussians of the training width (σ = 0.1°), so that peak shapes, instrument
broadening, noise and background stop mattering and only positions and integrated intensities
remain.

Peaks are local maxima of the (background-free) profile, smoothed by a Gaussian narrower than any
peak, that stand above both a fraction of the strongest peak and the base (the median) by a
multiple of the noise (the median absolute deviation of the smoothed values); maxima closer than
`min_separation_deg` keep the higher; a maximum wider than `max_fwhm_deg` is background, not a
reflection. A peak's position is refined by a parabola through its three highest points, and its
intensity is its height times its full width at half maximum, i.e. its area up to a shape factor,
which is what a simulated stick's height stands for. The search and the widths are
scipy.signal's find_peaks and peak_widths.
"""

import numpy as np
from scipy import signal

from xxact_jax import constants
from xxact_jax.data import xrd as xrd_lib
from xxact_jax.inference import background as background_lib

MIN_RELATIVE_HEIGHT = 0.01    # of the strongest peak
NOISE_MULTIPLE = 5.0          # × the noise's standard deviation
MIN_SEPARATION_DEG = 0.06
SMOOTHING_DEG = 0.04          # σ of the Gaussian that quiets counting noise before the search
# Widest maximum taken for a reflection: laboratory peaks are 0.05–0.3° wide, nanocrystalline
# ones up to ~1°; a wider one is background the SNIP filter left (a low-angle rise, a hump).
MAX_FWHM_DEG = 1.0
# The lines a scan's indexing reads: the first MAX_LINES in angle, none fainter than
# MIN_RELATIVE_INTENSITY of the strongest (at a percent, noise and impurity phases crowd out the
# weak reflections of the phase itself).
MAX_LINES = 20
MIN_RELATIVE_INTENSITY = 0.02


def smooth(profile: np.ndarray, sigma_points: float) -> np.ndarray:
  if sigma_points <= 0:
    return np.asarray(profile, np.float64)
  half = int(np.ceil(4 * sigma_points))
  kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_points) ** 2)
  padded = np.pad(np.asarray(profile, np.float64), half, mode="edge")
  return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def find_peaks(profile: np.ndarray, step: float = constants.TWO_THETA_STEP,
               min_relative_height: float = MIN_RELATIVE_HEIGHT,
               noise_multiple: float = NOISE_MULTIPLE,
               min_separation_deg: float = MIN_SEPARATION_DEG,
               smoothing_deg: float = SMOOTHING_DEG,
               max_fwhm_deg: float = MAX_FWHM_DEG) -> tuple[np.ndarray, np.ndarray]:
  """(fractional indices, integrated intensities) of the reflections of a background-free
  profile sampled every `step` degrees."""
  raw = np.asarray(profile, np.float64)
  if raw.size < 3 or not np.isfinite(raw).all():
    raise ValueError("a profile of at least 3 finite points is needed to find peaks")
  y = smooth(raw, smoothing_deg / step)
  # SNIP follows the bottom of the noise, so the base it leaves sits above zero: heights, widths
  # and the noise threshold count from the base (the median), not from zero.
  y = y - np.median(y)
  # The noise's standard deviation: the median absolute deviation of the values (reflections
  # cover a minority of the points and barely move a median; point-to-point differences would
  # miss the correlated noise of a scan interpolated from a coarser step).
  noise = float(1.4826 * np.median(np.abs(y - np.median(y))))
  threshold = max(min_relative_height * y.max(), noise_multiple * noise)
  # Maxima strictly above the threshold; of two closer than min_separation, the higher.
  separation = max(1, int(round(min_separation_deg / step)))
  kept, _ = signal.find_peaks(y, height=np.nextafter(threshold, np.inf), distance=separation + 1)
  if kept.size == 0:
    return np.zeros(0), np.zeros(0)
  # Widths at half the height above the base (zero), walked out over the whole profile.
  widths = signal.peak_widths(y, kept, rel_height=0.5, prominence_data=(
      y[kept], np.zeros(kept.size, np.intp), np.full(kept.size, y.size - 1, np.intp)))[0]
  fwhm = np.maximum(1.0, widths) * step
  kept, fwhm = kept[fwhm <= max_fwhm_deg], fwhm[fwhm <= max_fwhm_deg]
  # Position refined by the parabola through the three highest points.
  a, b, c = y[kept - 1], y[kept], y[kept + 1]
  curvature = a - 2 * b + c
  with np.errstate(divide="ignore", invalid="ignore"):
    offset = np.where(curvature < 0, 0.5 * (a - c) / curvature, 0.0)
  return kept + np.clip(offset, -0.5, 0.5), b * fwhm


def render(profile: np.ndarray, inside: np.ndarray,
           sigma: float = constants.XRD_SIGMA) -> np.ndarray:
  """The measured points (`inside`) of a background-free profile on the model grid re-drawn as
  Gaussian sticks of width `sigma`, max 100; points outside `inside` are left at 0 (the caller
  marks them unmeasured)."""
  grid = constants.two_theta_grid()
  index = np.flatnonzero(inside)
  peaks, areas = find_peaks(np.asarray(profile, np.float64)[index])
  if peaks.size == 0:
    raise ValueError("no peak stands above the noise")
  # `inside` is one contiguous range of the grid (a scan's coverage).
  rendered = xrd_lib.smear_sticks(grid[index[0]] + constants.TWO_THETA_STEP * peaks, areas, sigma)
  rendered[~inside] = 0.0
  return rendered


def lines_of_pattern(pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(2θ in degrees, relative intensity) of the reflections of a scan on the model grid (max 100,
  constants.UNMEASURED_INTENSITY where not measured), after SNIP background removal."""
  pattern = np.asarray(pattern, np.float64)
  if pattern.shape != (constants.NUM_XRD_POINTS,):
    raise ValueError(f"a pattern on the {constants.NUM_XRD_POINTS}-point grid is needed, got shape "
                     f"{pattern.shape}")
  inside = np.flatnonzero(pattern >= 0)
  if inside.size < 3:
    return np.zeros(0), np.zeros(0)
  # The measured range is one contiguous stretch of the grid.
  profile = pattern[inside[0]:inside[-1] + 1]
  profile = profile - background_lib.snip(profile)
  if not np.isfinite(profile).all() or profile.max() <= 0:
    return np.zeros(0), np.zeros(0)
  positions, areas = find_peaks(profile)
  grid = constants.two_theta_grid()
  two_theta = grid[inside[0]] + positions * constants.TWO_THETA_STEP
  return two_theta, areas / max(areas.max(), 1e-12) if areas.size else areas


def select_lines(two_theta, intensity, max_lines: int = MAX_LINES):
  """(2θ, intensity) of the lines indexed: the first `max_lines` in angle at least
  MIN_RELATIVE_INTENSITY of the strongest."""
  two_theta = np.asarray(two_theta, np.float64)
  intensity = np.asarray(intensity, np.float64)
  if two_theta.size == 0:
    return two_theta, intensity
  order = np.argsort(two_theta)
  two_theta, intensity = two_theta[order], intensity[order]
  keep = intensity >= MIN_RELATIVE_INTENSITY * intensity.max()
  return two_theta[keep][:max_lines], intensity[keep][:max_lines]
