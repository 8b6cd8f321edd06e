"""Diffraction physics shared by the simulators, the augmentation and the inference code.

Angles 2θ are in degrees, wavelengths and 1/d in Å and 1/Å. Each function follows its input:
numpy stays numpy (float64 stays float64), jax arrays and tracers take jax.numpy, Python numbers
math. Importing this module imports neither jax nor pymatgen.
"""

import math
import sys
import types

import numpy as np

SCHERRER_K = 0.9
# pymatgen's form factor f(s) = Z − 41.78214 s² Σ a_i exp(−b_i s²), s = sin θ / λ = |g| / 2.
FORM_FACTOR_SCALE = 41.78214
_MATH = types.SimpleNamespace(sin=math.sin, arcsin=math.asin, radians=math.radians,
                              degrees=math.degrees, minimum=min)


def _xp(*values):
  """jax.numpy for any jax array or tracer, math for Python numbers only, else numpy."""
  jax = sys.modules.get("jax")
  if jax is not None and any(isinstance(v, jax.Array) for v in values):
    return jax.numpy
  return _MATH if all(type(v) in (int, float) for v in values) else np


def theta(two_theta):
  """θ in radians."""
  return _xp(two_theta).radians(two_theta) / 2


def sin_theta(two_theta):
  """sin θ of 2θ."""
  return _xp(two_theta).sin(theta(two_theta))


def two_theta(sin_theta):
  """2θ of sin θ, capped at sin θ = 1 (180°)."""
  xp = _xp(sin_theta)
  return 2 * xp.degrees(xp.arcsin(xp.minimum(sin_theta, 1.0)))


def bragg_sin_theta(inverse_d, wavelength):
  """Bragg's law: sin θ = λ / 2d of a reflection with 1/d = |g|."""
  return wavelength * inverse_d / 2


def inverse_d(two_theta, wavelength):
  """Bragg's law the other way: 1/d = |g| = 2 sin θ / λ."""
  return 2 * sin_theta(two_theta) / wavelength


def rescale_two_theta(two_theta_deg, ratio, unreachable=math.nan):
  """2·asin(ratio·sin θ): the 2θ of a reflection at `two_theta_deg` once sin θ is multiplied by
  `ratio` (λ_new / λ_old for another wavelength, 1 / (1 + ε) for a strain ε of every d).

  Where |ratio·sin θ| > 1: `unreachable`, or with unreachable=None sin θ capped at 1 (180°).
  """
  xp = _xp(two_theta_deg, ratio)
  s = ratio * sin_theta(two_theta_deg)
  if unreachable is None:
    return two_theta(s)
  return xp.where(abs(s) <= 1.0, two_theta(xp.clip(s, -1.0, 1.0)), unreachable)


def scherrer_fwhm(cos_theta, size, wavelength):
  """Crystallite-size FWHM in degrees of 2θ, K λ / (L cos θ); size L in the unit of λ."""
  return _xp(cos_theta).degrees(SCHERRER_K * wavelength / (size * cos_theta))


def lorentz_polarisation(sin_theta):
  """(1 + cos² 2θ) / (sin² θ cos θ), cos θ floored at 1e-6."""
  xp = _xp(sin_theta)
  sin2 = sin_theta * sin_theta
  cos_2theta = 1 - 2 * sin2
  return (1 + cos_2theta * cos_2theta) / (sin2 * xp.sqrt(xp.maximum(1 - sin2, 1e-12)))


def cos_sin_2pi(t):
  """cos(2πt), sin(2πt) for float32 |t| ≤ 1/2: Taylor series of the half angle, then doubled
  (XLA's CPU cos/sin are scalar calls, ~7× slower)."""
  x = _xp(t).float32(math.pi) * t
  x2 = x * x
  s = x * (1 + x2 * (-1 / 6 + x2 * (1 / 120 + x2 * (-1 / 5040 + x2 * (
      1 / 362880 + x2 * (-1 / 39916800))))))
  c = 1 + x2 * (-1 / 2 + x2 * (1 / 24 + x2 * (-1 / 720 + x2 * (1 / 40320 + x2 * (
      -1 / 3628800 + x2 * (1 / 479001600))))))
  return c * c - s * s, 2 * s * c


def structure_factor(numbers, coefficients, s2, phase, weights):
  """|F|² = |Σ_e f_e(s) Σ_s w_se exp(2πi h·r_s)|² [B, R] with pymatgen's form factors f_e.

  Args:
    numbers, coefficients: atomic numbers [B, E] (float, 0 = padding), their (a_i, b_i)
      [B, E, 4, 2]; s2: (sin θ / λ)² [B, R]; phase: h·r_s [B, R, S] (only its value mod 1
      counts); weights: occupancy of each site by each element [B, S, E].
  """
  xp = _xp(numbers, coefficients, s2, phase, weights)
  decay = sum(coefficients[:, None, :, i, 0] * xp.exp(-coefficients[:, None, :, i, 1]
                                                      * s2[..., None])
              for i in range(coefficients.shape[2]))
  form = numbers[:, None, :] - FORM_FACTOR_SCALE * s2[..., None] * decay
  form = xp.where(numbers[:, None, :] > 0, form, 0.0)                    # [B, R, E]
  cos, sin = cos_sin_2pi(phase - xp.round(phase))
  real = xp.sum(form * xp.einsum("brs,bse->bre", cos, weights), axis=-1)
  imag = xp.sum(form * xp.einsum("brs,bse->bre", sin, weights), axis=-1)
  return real * real + imag * imag
