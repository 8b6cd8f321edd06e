"""The XRD pattern as a list of peaks: one token per peak, found inside the model.

The paper's encoder reads 17 patches of the raw profile, so everything an instrument adds to a
profile (background, peak shape and width, counting noise, the Kα doublet's shoulders, the scan
range) reaches the network. A peak list keeps what identifies a crystal, the positions and
relative heights of its reflections, and drops the rest by construction:

- background: each peak's height is its prominence above the higher of the two lowest points
  within ±1° (`BACKGROUND_WINDOW`), so a smooth background adds nothing;
- peak shape and width: only the refined maximum and the height are kept (the width is a
  separate feature the model may use or ignore);
- noise: the profile is smoothed over ~0.03° before maxima are taken, and peaks weaker than
  `min_relative_height` of the strongest are dropped;
- scan range: grid points marked `constants.UNMEASURED_INTENSITY` (and a margin around them)
  hold no peaks, so a narrower scan gives a shorter list, not a list of empty peaks.

The same finder runs on the stored simulated patterns in training (after the measured-like
augmentation of data/augment.py, when it is on) and on measured scans at predict time: what the
model learns to read is exactly what it will be given. Each token carries Fourier features of
2θ and of log(1/d): in log(1/d) a cell strain shifts every peak alike, so the differences that
attention takes between peaks (products of sines and cosines) are strain-invariant, and Q ratios,
which indexing uses, are differences of log(1/d).
"""

import jax
import jax.numpy as jnp
import numpy as np

from xxact_jax import constants

# Grid points of the profile's Gaussian smoothing (σ = 1.5 × 0.02° = 0.03°, below the 0.1° of
# the simulated peaks, so that simulated maxima do not move and single-channel noise does).
SMOOTH_SIGMA_POINTS = 1.5
SMOOTH_RADIUS = 4
# ±1° (50 grid points) on each side: the background a peak's prominence is measured against.
BACKGROUND_WINDOW = 50
# Fourier frequencies of the position features: 2^0 ... 2^10 cycles over the range, so that the
# finest resolves ~0.04° in 2θ.
NUM_FREQUENCIES = 11


def _log_inverse_d(two_theta, xp=jnp):
  """log(1/d) of a 2θ on the grid's Cu Kα scale (Bragg's law)."""
  return xp.log(2.0 * xp.sin(xp.deg2rad(two_theta) / 2.0) / constants.CU_KA_LINES[0])


def find_peaks(xrd: jax.Array, max_peaks: int, min_relative_height: float = 0.01):
  """Peaks of patterns on the model's grid (5-90° at 0.02°, Cu Kα scale, max 100).

  Args:
    xrd: float [B, 4250]; grid points not measured hold `constants.UNMEASURED_INTENSITY`.
    max_peaks: K, the most prominent peaks kept per pattern.
    min_relative_height: peaks below this fraction of the strongest one's prominence are dropped.

  Returns:
    (two_theta [B, K] in degrees, height [B, K] prominence relative to the strongest (0-1],
    width [B, K] Gaussian σ in degrees from the curvature at the maximum, valid bool [B, K]),
    strongest first; invalid entries are zero.
  """
  x = xrd.astype(jnp.float32)
  measured = x > constants.UNMEASURED_INTENSITY / 2
  x = jnp.where(measured, x, 0.0)
  offsets = np.arange(-SMOOTH_RADIUS, SMOOTH_RADIUS + 1)
  kernel = np.exp(-0.5 * (offsets / SMOOTH_SIGMA_POINTS) ** 2)
  kernel = kernel / kernel.sum()
  padded = jnp.pad(x, ((0, 0), (SMOOTH_RADIUS, SMOOTH_RADIUS)), mode="edge")
  n = x.shape[1]
  s = sum(float(kernel[i]) * padded[:, i:i + n] for i in range(len(offsets)))
  # A maximum needs measured points all around it: none at the edges of the scanned range.
  # (Unmeasured points within the margin counted from a cumulative sum: a windowed reduction
  # here costs ~10× more on a CPU.)
  margin = SMOOTH_RADIUS + 1
  gaps = jnp.pad(jnp.cumsum(~measured, axis=1, dtype=jnp.int32), ((0, 0), (margin + 1, margin)),
                 mode="edge").at[:, :margin + 1].set(0)
  inner = gaps[:, 2 * margin + 1:] == gaps[:, :n]
  left, mid, right = s[:, :-2], s[:, 1:-1], s[:, 2:]
  is_max = jnp.pad((mid > left) & (mid >= right), ((0, 0), (1, 1)))
  big = jnp.float32(1e9)
  masked = jnp.where(measured, s, big)     # unmeasured points do not lower the background
  w = BACKGROUND_WINDOW
  left_min = jax.lax.reduce_window(masked, jnp.inf, jax.lax.min, (1, w + 1), (1, 1),
                                   ((0, 0), (w, 0)))
  right_min = jax.lax.reduce_window(masked, jnp.inf, jax.lax.min, (1, w + 1), (1, 1),
                                    ((0, 0), (0, w)))
  prominence = s - jnp.maximum(left_min, right_min)
  score = jnp.where(is_max & inner & (prominence > 0), prominence, -1.0)
  # Sub-grid offset and curvature of a parabola through each point and its neighbours, for
  # every point at once: elementwise work is cheaper on a CPU than gathers of neighbours.
  a = jnp.pad(s[:, :-1], ((0, 0), (1, 0)), mode="edge")
  c = jnp.pad(s[:, 1:], ((0, 0), (0, 1)), mode="edge")
  curvature = a - 2.0 * s + c
  safe = jnp.where(curvature < 0, curvature, -1.0)
  offset = jnp.clip(0.5 * (a - c) / safe, -0.5, 0.5)
  # The barrier keeps XLA's CPU top-k kernel: with the gather below fused into it, top_k is
  # lowered as a full sort of the 4,250 points (3× the cost of everything else here).
  top, index = jax.lax.optimization_barrier(jax.lax.top_k(score, max_peaks))
  picked = jnp.take_along_axis(jnp.stack([offset, curvature], axis=-1), index[..., None], axis=1)
  delta, curvature = picked[..., 0], picked[..., 1]
  strongest = jnp.maximum(top[:, :1], 1e-30)
  valid = (top > 0) & (top >= min_relative_height * strongest)
  two_theta = constants.TWO_THETA_MIN + constants.TWO_THETA_STEP * (index + delta)
  sigma_points = jnp.sqrt(jnp.maximum(top, 0.0) / jnp.maximum(-curvature, 1e-6))
  width = constants.TWO_THETA_STEP * jnp.clip(sigma_points, 0.5, 50.0)
  height = jnp.maximum(top, 0.0) / strongest
  zero = jnp.zeros((), jnp.float32)
  return (jnp.where(valid, two_theta, zero), jnp.where(valid, height, zero),
          jnp.where(valid, width, zero), valid)


def peak_features(two_theta: jax.Array, height: jax.Array, width: jax.Array) -> jax.Array:
  """float32 [..., 4 * NUM_FREQUENCIES + 4]: what each peak token is made of (module docstring)."""
  lo, hi = constants.TWO_THETA_MIN, constants.TWO_THETA_MAX
  u = (two_theta - lo) / (hi - lo)
  log_q = _log_inverse_d(jnp.clip(two_theta, lo, hi))
  q_lo, q_hi = (float(_log_inverse_d(t, np)) for t in (lo, hi))
  v = (log_q - q_lo) / (q_hi - q_lo)
  frequencies = jnp.pi * 2.0 ** jnp.arange(NUM_FREQUENCIES, dtype=jnp.float32)
  angles = jnp.concatenate([u[..., None] * frequencies, v[..., None] * frequencies], axis=-1)
  h = jnp.maximum(height, 1e-3)
  extra = jnp.stack([height, jnp.log(h) / 7.0, jnp.sqrt(height),
                     jnp.log(jnp.maximum(width, 1e-3) / 0.1)], axis=-1)
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles), extra], axis=-1)
