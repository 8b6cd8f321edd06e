"""Puts a measured pattern on the model's input grid (Cu Kα, 5–90°, 0.02°, max 100)."""

import warnings
from typing import Union

import numpy as np

from xxact_jax import constants
from xxact_jax.inference import background as background_lib
from xxact_jax.inference import patterns
from xxact_jax.inference import wavelengths
from xxact_jax.inference.errors import PatternError


class PartialCoverageWarning(UserWarning):
  """The measured range does not cover the whole 5–90° model grid."""


BACKGROUND_METHODS = ("none", "snip")


def to_model_grid(pattern: patterns.MeasuredPattern,
                  wavelength: Union[str, float, None] = None,
                  background: str = "none") -> np.ndarray:
  """Converts to Cu Kα 2θ, interpolates onto the grid and scales to max 100.

  `wavelength` (Å or anode name) overrides the one stated in the file; with
  neither, Cu Kα is assumed. Grid points outside the measured range are zero
  (with a `PartialCoverageWarning`); negative intensities (over-subtracted
  background) are clipped to zero. `background="snip"` subtracts a SNIP
  background estimated over the measured range (inference/background.py).
  """
  if background not in BACKGROUND_METHODS:
    raise ValueError(f"background must be one of {BACKGROUND_METHODS}, got {background!r}")
  if wavelength is not None:
    source_wavelength = wavelengths.parse_wavelength(wavelength)
  elif pattern.wavelength is not None:
    source_wavelength = pattern.wavelength
  else:
    source_wavelength = wavelengths.CU_KA
  two_theta = wavelengths.to_cu_two_theta(pattern.two_theta, source_wavelength)
  reachable = np.isfinite(two_theta)
  two_theta, intensity = two_theta[reachable], pattern.intensity[reachable]

  grid = constants.two_theta_grid()
  if two_theta.size < 2 or two_theta[-1] < grid[0] or two_theta[0] > grid[-1]:
    measured = _range_text(pattern.two_theta)
    converted = f" ({_range_text(two_theta)} on the Cu Kα scale)" if two_theta.size else ""
    raise PatternError(
        f"2θ range {measured}{converted} lies entirely outside the model's "
        f"{constants.TWO_THETA_MIN:g}–{constants.TWO_THETA_MAX:g}° (Cu Kα) range",
        path=pattern.path)

  # Half a grid step of slack at either end: a Cu Kα scan from 5.00° at 1.541838 Å lands a
  # hair above 5° after conversion, and the edge value stands for that point.
  slack = constants.TWO_THETA_STEP / 2
  inside = (grid >= two_theta[0] - slack) & (grid <= two_theta[-1] + slack)
  resampled = np.zeros_like(grid)
  resampled[inside] = np.interp(grid[inside], two_theta, intensity)
  if not inside.all():
    warnings.warn(
        f"{pattern.path}: measured range covers {_range_text(two_theta)} (Cu Kα); "
        f"{int((~inside).sum())} of {grid.size} grid points outside it are set to zero",
        PartialCoverageWarning, stacklevel=2)
  if (resampled < 0).any():
    resampled = np.maximum(resampled, 0.0)
  if background == "snip":
    resampled = background_lib.subtract(resampled, inside)
  peak = resampled.max()
  if peak <= 0:
    raise PatternError("no positive intensity inside the model's 2θ range",
                       path=pattern.path, field="intensity")
  return (resampled * (constants.XRD_MAX_INTENSITY / peak)).astype(np.float32)


def load_measured_pattern(path: str, wavelength: Union[str, float, None] = None,
                          background: str = "none") -> np.ndarray:
  """Reads a pattern file and returns the float32[4250] model input."""
  return to_model_grid(patterns.read_pattern(path), wavelength, background)


def _range_text(two_theta):
  return f"{float(np.min(two_theta)):.2f}–{float(np.max(two_theta)):.2f}°"
