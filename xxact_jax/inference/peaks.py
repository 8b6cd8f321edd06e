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
which is what a simulated stick's height stands for.
"""

import numpy as np

from xxact_jax import constants
from xxact_jax.data import xrd as xrd_lib

MIN_RELATIVE_HEIGHT = 0.01    # of the strongest peak
NOISE_MULTIPLE = 5.0          # × the noise's standard deviation
MIN_SEPARATION_DEG = 0.06
SMOOTHING_DEG = 0.04          # σ of the Gaussian that quiets counting noise before the search
# Widest maximum taken for a reflection: laboratory peaks are 0.05–0.3° wide, nanocrystalline
# ones up to ~1°; a wider one is background the SNIP filter left (a low-angle rise, a hump).
MAX_FWHM_DEG = 1.0


def noise_sigma(profile: np.ndarray) -> float:
  """The noise's standard deviation about a background-free base: the median absolute
  deviation of the values (reflections cover a minority of the points and barely move a median;
  point-to-point differences would miss the correlated noise of a scan interpolated from a
  coarser step)."""
  y = np.asarray(profile, np.float64)
  return float(1.4826 * np.median(np.abs(y - np.median(y))))


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
  threshold = max(min_relative_height * y.max(), noise_multiple * noise_sigma(y))
  interior = np.arange(1, y.size - 1)
  candidates = interior[(y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > threshold)]
  # Highest first; a maximum within min_separation of a kept one is the same reflection.
  separation = max(1, int(round(min_separation_deg / step)))
  kept = []
  taken = np.zeros(y.size, bool)
  for i in candidates[np.argsort(-y[candidates], kind="stable")]:
    if not taken[i]:
      kept.append(i)
      taken[max(0, i - separation):i + separation + 1] = True
  kept = np.sort(np.array(kept, np.int64))
  positions, areas = [], []
  for i in kept:
    fwhm = _fwhm_points(y, i) * step
    if fwhm > max_fwhm_deg:
      continue
    a, b, c = y[i - 1], y[i], y[i + 1]
    curvature = a - 2 * b + c
    offset = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    positions.append(i + float(np.clip(offset, -0.5, 0.5)))
    areas.append(b * fwhm)
  return np.array(positions, np.float64), np.array(areas, np.float64)


def _fwhm_points(y: np.ndarray, i: int) -> float:
  """Full width at half maximum of the peak at i, in points: walks out to half height on each
  side and interpolates linearly between the points that straddle it."""
  half = y[i] / 2
  left = i
  while left > 0 and y[left] > half:
    left -= 1
  right = i
  while right < y.size - 1 and y[right] > half:
    right += 1
  left_x = left + (half - y[left]) / (y[left + 1] - y[left]) if y[left] <= half else float(left)
  right_x = (right - (half - y[right]) / (y[right - 1] - y[right]) if y[right] <= half
             else float(right))
  return max(1.0, right_x - left_x)


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
