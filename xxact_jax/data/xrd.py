"""Gaussian smearing of XRD stick patterns onto the fixed 2θ grid (pymatgen-free)."""

import numpy as np

from xxact_jax import constants

# exp(-6²/2) ≈ 1.5e-8 of a peak: beyond ±6σ a stick adds nothing at float32 precision.
_WINDOW_SIGMAS = 6.0


def smear_sticks(two_theta, intensities, sigma: float = constants.XRD_SIGMA) -> np.ndarray:
  """float32[4250]: sticks (2θ in degrees, non-negative heights, [n] each) smeared with
  Gaussians of σ `sigma` degrees on the grid 5 + 0.02·i, scaled to max 100.

  y(2θ) = Σₖ Iₖ·exp(−(2θ − 2θₖ)² / (2σ²)), evaluated for each stick only on the grid points
  within ±6σ of it. ValueError for mismatched shapes, non-finite values or nothing on the grid.
  """
  two_theta = np.asarray(two_theta, np.float64).ravel()
  intensities = np.asarray(intensities, np.float64).ravel()
  if two_theta.shape != intensities.shape:
    raise ValueError(f"two_theta has {two_theta.size} sticks but intensities has "
                     f"{intensities.size}.")
  if not (np.all(np.isfinite(two_theta)) and np.all(np.isfinite(intensities))):
    raise ValueError("XRD sticks contain non-finite positions or intensities.")
  step, start, num = constants.TWO_THETA_STEP, constants.TWO_THETA_MIN, constants.NUM_XRD_POINTS
  half_width = int(np.ceil(_WINDOW_SIGMAS * sigma / step))
  offsets = np.arange(-half_width, half_width + 1)
  centre = np.rint((two_theta - start) / step).astype(np.int64)
  index = centre[:, None] + offsets[None, :]                       # [n, window]
  delta = start + step * index - two_theta[:, None]
  weights = intensities[:, None] * np.exp(-0.5 * (delta / sigma) ** 2)
  inside = (index >= 0) & (index < num)
  pattern = np.bincount(index[inside], weights=weights[inside], minlength=num)
  peak = pattern.max(initial=0.0)
  if not peak > 0:
    raise ValueError("XRD pattern has no intensity on the 5-90° grid.")
  return (pattern * (constants.XRD_MAX_INTENSITY / peak)).astype(np.float32)
