"""Puts a measured pattern on the model's input grid (Cu Kα, 5–90°, 0.02°, max 100)."""

import dataclasses
import warnings
from typing import Optional, Union

import numpy as np

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.inference import background as background_lib
from xxact_jax.inference import peaks as peaks_lib
from xxact_jax.inference import patterns
from xxact_jax.inference import wavelengths
from xxact_jax.inference.errors import PatternError


class PartialCoverageWarning(UserWarning):
  """The measured range does not cover the whole 5–90° model grid."""


class PreprocessingWarning(UserWarning):
  """A requested preprocessing step does not apply to this scan and was skipped."""


class WavelengthAssumedWarning(UserWarning):
  """Neither the caller nor the file gave the scan's wavelength: Cu Kα was assumed."""


BACKGROUND_METHODS = ("none", "snip")
# Least a scan must hold inside 5–90° (Cu Kα scale) to be put on the grid: enough points, and
# steps fine enough to sample a peak (the simulated ones have σ = 0.1°).
MIN_POINTS = 50
MAX_STEP_DEG = 0.2
# Smallest largest intensity a scan may have: below it, scaling to max 100 overflows (100/peak
# is past float64's range near 1e-306) and subnormal values have lost their precision. No
# detector records such values; they come from a unit or scaling mistake.
MIN_PEAK_INTENSITY = 1e-300


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a measured scan is prepared for the model; one set of defaults for every entry point
  (`load().predict`, the predict CLI, `evaluate --measured`).

  background: "snip" subtracts a SNIP background estimated over the measured range
    (inference/background.py); "none" keeps the scan's background.
  strip_ka2: removes the Kα2 companion of every reflection (Rachinger) from a scan taken with an
    anode's unresolved Kα doublet, so that it shows Kα1 lines only.
  redraw_peaks: finds the scan's reflections (after SNIP background removal, whatever
    `background` says) and draws them again as the training patterns' σ = 0.1° Gaussians of the
    reflections' integrated intensities (inference/peaks.py); combine with strip_ka2 for an
    anode's doublet.
  min_coverage_deg: a scan covering less of the 5–90° grid (on the Cu Kα scale) is refused: a
    model told "not measured" for most of the pattern has little to go on. 0 accepts any.
  The defaults are those that scored best on the measured development scans (docs/MEASURED.md).
  """
  background: str = "none"
  strip_ka2: bool = False
  redraw_peaks: bool = False
  min_coverage_deg: float = 10.0

  def __post_init__(self):
    if self.background not in BACKGROUND_METHODS:
      raise ValueError(f"background must be one of {BACKGROUND_METHODS}, "
                       f"got {self.background!r}")


def add_arguments(parser) -> None:
  """The command-line flags of `Preprocessing` (predict and evaluate share them)."""
  import argparse  # pylint: disable=g-import-not-at-top
  default = Preprocessing()
  parser.add_argument("--background", choices=BACKGROUND_METHODS, default=default.background,
                      help="background removal of each measured scan before it meets the model")
  parser.add_argument("--strip_ka2", action=argparse.BooleanOptionalAction,
                      default=default.strip_ka2,
                      help="remove the Kα2 companion reflections of measured scans (Rachinger)")
  parser.add_argument("--redraw_peaks", action=argparse.BooleanOptionalAction,
                      default=default.redraw_peaks,
                      help="find each scan's reflections and draw them again as the training "
                           "patterns' σ = 0.1° Gaussians")
  parser.add_argument("--min_coverage_deg", type=float, default=default.min_coverage_deg,
                      help="refuse scans covering less of 5–90° (Cu Kα scale); 0 accepts any")


def from_arguments(args) -> Preprocessing:
  """The `Preprocessing` of parsed `add_arguments` flags."""
  return Preprocessing(background=args.background, strip_ka2=args.strip_ka2,
                       redraw_peaks=args.redraw_peaks, min_coverage_deg=args.min_coverage_deg)


def to_model_grid(pattern: patterns.MeasuredPattern,
                  wavelength: Union[str, float, None] = None,
                  preprocessing: Optional[Preprocessing] = None) -> np.ndarray:
  """Converts to Cu Kα 2θ, interpolates onto the grid and scales to max 100.

  `wavelength` (Å or anode name) overrides the one stated in the file; with neither, Cu Kα is
  assumed. Grid points outside the measured range hold `constants.UNMEASURED_INTENSITY` (with a
  `PartialCoverageWarning`); negative intensities (over-subtracted background) are clipped to
  zero. `preprocessing` (default `Preprocessing()`) chooses background removal and Kα2
  stripping.
  """
  preprocessing = Preprocessing() if preprocessing is None else preprocessing
  if wavelength is not None:
    source_wavelength = wavelengths.parse_wavelength(wavelength)
  elif pattern.wavelength_problem is not None:
    raise PatternError(f"{pattern.wavelength_problem}; give the wavelength explicitly "
                       "(--wavelength, or the CSV's wavelength column) to use this scan",
                       path=None)
  elif pattern.wavelength is not None:
    source_wavelength = pattern.wavelength
  else:
    # Said, not silent: a Mo scan read as Cu would put every line at the wrong d-spacing.
    stated = "" if pattern.path.startswith("<") else " or stated in the file"   # <arrays>
    warnings.warn(f"{pattern.path}: no wavelength given{stated}; Cu Kα "
                  f"({wavelengths.CU_KA:g} Å) assumed", WavelengthAssumedWarning, stacklevel=2)
    source_wavelength = wavelengths.CU_KA
  intensity = pattern.intensity
  check_intensity_scale(intensity, pattern.path)
  if preprocessing.strip_ka2:
    lines = wavelengths.doublet_of(source_wavelength)
    if lines is None:
      warnings.warn(
          f"{pattern.path}: wavelength {source_wavelength:g} Å is no anode's Kα or Kα1 line; "
          "Kα2 not stripped", PreprocessingWarning, stacklevel=2)
    else:
      intensity = strip_ka2(pattern.two_theta, intensity, *lines)
      source_wavelength = lines[0]     # what is left is the Kα1 pattern
  two_theta = wavelengths.to_cu_two_theta(pattern.two_theta, source_wavelength)
  reachable = np.isfinite(two_theta)
  two_theta, intensity = two_theta[reachable], intensity[reachable]

  grid = constants.two_theta_grid()
  if two_theta.size < 2 or two_theta[-1] < grid[0] or two_theta[0] > grid[-1]:
    measured = _range_text(pattern.two_theta)
    converted = f" ({_range_text(two_theta)} on the Cu Kα scale)" if two_theta.size else ""
    raise PatternError(
        f"2θ range {measured}{converted} lies entirely outside the model's "
        f"{constants.TWO_THETA_MIN:g}–{constants.TWO_THETA_MAX:g}° (Cu Kα) range",
        path=pattern.path)

  # A few points, or steps far wider than a peak, cannot place reflections: say so rather
  # than interpolate straight lines between them.
  in_range = (two_theta >= grid[0]) & (two_theta <= grid[-1])
  if in_range.sum() < MIN_POINTS:
    raise PatternError(
        f"only {int(in_range.sum())} points inside the model's 2θ range (Cu Kα scale); at "
        f"least {MIN_POINTS} are needed", path=pattern.path)
  covered = float(min(two_theta[-1], grid[-1]) - max(two_theta[0], grid[0]))
  if covered < preprocessing.min_coverage_deg:
    raise PatternError(
        f"covers only {covered:.1f}° of the model's {constants.TWO_THETA_MIN:g}–"
        f"{constants.TWO_THETA_MAX:g}° range (Cu Kα scale); at least "
        f"{preprocessing.min_coverage_deg:g}° are needed (lower min_coverage_deg to accept it)",
        path=pattern.path)
  step = float(np.median(np.diff(two_theta[in_range])))
  if step > MAX_STEP_DEG:
    raise PatternError(
        f"median 2θ step {step:.3g}° (Cu Kα scale) is coarser than {MAX_STEP_DEG}°; the model "
        f"reads peaks {constants.TWO_THETA_STEP}° apart", path=pattern.path, field="2θ")

  # Half a grid step of slack at either end: a Cu Kα scan from 5.00° at 1.541838 Å lands a
  # hair above 5° after conversion, and the edge value stands for that point.
  slack = constants.TWO_THETA_STEP / 2
  inside = (grid >= two_theta[0] - slack) & (grid <= two_theta[-1] + slack)
  resampled = np.zeros_like(grid)
  resampled[inside] = np.interp(grid[inside], two_theta, intensity)
  if not inside.all():
    warnings.warn(
        f"{pattern.path}: measured range covers {_range_text(two_theta)} (Cu Kα); "
        f"{int((~inside).sum())} of {grid.size} grid points outside it are marked unmeasured",
        PartialCoverageWarning, stacklevel=2)
  resampled = np.maximum(resampled, 0.0)
  if preprocessing.redraw_peaks:
    # Not clipped at zero: the search judges peaks against the noise on both sides of the base.
    profile = resampled.copy()
    profile[inside] -= background_lib.snip(resampled[inside])
    try:
      resampled = peaks_lib.render(profile, inside)
    except ValueError as e:
      raise PatternError(f"cannot redraw its peaks: {e}", path=pattern.path,
                         field="intensity") from None
  elif preprocessing.background == "snip":
    resampled = background_lib.subtract(resampled, inside)
  peak = resampled.max()
  if peak <= 0:
    raise PatternError("no positive intensity inside the model's 2θ range",
                       path=pattern.path, field="intensity")
  out = resampled * (constants.XRD_MAX_INTENSITY / peak)
  if peak < MIN_PEAK_INTENSITY or not np.all(np.isfinite(out)):
    raise PatternError(f"largest intensity after preprocessing is {peak:.3g}, too small to "
                       f"scale to {constants.XRD_MAX_INTENSITY:g} (at least "
                       f"{MIN_PEAK_INTENSITY:g} is needed)", path=pattern.path,
                       field="intensity")
  out[~inside] = constants.UNMEASURED_INTENSITY
  return out.astype(np.float32)


def check_intensity_scale(intensity: np.ndarray, path: str) -> None:
  """PatternError when the largest intensity is positive but below MIN_PEAK_INTENSITY
  (subnormal values: a scan x 1e-320 would scale to Inf and predict NaN)."""
  intensity = np.asarray(intensity, np.float64)
  largest = float(np.max(intensity)) if intensity.size else 0.0
  if 0.0 < largest < MIN_PEAK_INTENSITY:
    raise PatternError(f"largest intensity is {largest:.3g}, below {MIN_PEAK_INTENSITY:g}: "
                       "too small to scale without overflow or loss of precision (a unit or "
                       "scaling mistake?)", path=path, field="intensity")


def strip_ka2(two_theta: np.ndarray, intensity: np.ndarray, ka1: float, ka2: float,
              ratio: float = 0.5) -> np.ndarray:
  """The Kα1 part of a scan recorded with the Kα1 + Kα2 doublet (Rachinger's method).

  Every Kα1 reflection at θ1 has a Kα2 companion, `ratio` times as strong, at
  sin θ2 = (λ2/λ1) sin θ1. Walking up in angle, the Kα1 intensity at each point is the measured
  one less `ratio` times the Kα1 intensity already found at the companion's source angle.
  `two_theta` (degrees) must increase; the result is clipped at zero.
  """
  two_theta = np.asarray(two_theta, np.float64)
  measured = np.asarray(intensity, np.float64)
  source = physics.rescale_two_theta(two_theta, ka1 / ka2)
  # Linear interpolation of the Kα1 profile at `source` between points j-1 and j.
  j = np.searchsorted(two_theta, source, side="right")
  alpha1 = np.zeros_like(measured)
  for i in range(two_theta.size):
    k = j[i]
    if k == 0:                      # the companion's source lies before the scan starts
      alpha1[i] = measured[i]
      continue
    lo = k - 1
    hi = min(k, i)
    if hi == lo:
      alpha1[i] = measured[i] - ratio * alpha1[lo]
      continue
    f = (source[i] - two_theta[lo]) / (two_theta[hi] - two_theta[lo])
    if hi == i:                     # the source lies within the last step: solve for alpha1[i]
      alpha1[i] = (measured[i] - ratio * (1 - f) * alpha1[lo]) / (1 + ratio * f)
    else:
      alpha1[i] = measured[i] - ratio * ((1 - f) * alpha1[lo] + f * alpha1[hi])
  return np.maximum(alpha1, 0.0)


def load_measured_pattern(path: str, wavelength: Union[str, float, None] = None,
                          preprocessing: Optional[Preprocessing] = None) -> np.ndarray:
  """Reads a pattern file and returns the float32[4250] model input."""
  return to_model_grid(patterns.read_pattern(path), wavelength, preprocessing)


def _range_text(two_theta):
  return f"{float(np.min(two_theta)):.2f}–{float(np.max(two_theta)):.2f}°"
