"""Device side of the XRD engine: padded structures and reflection lists -> smeared patterns.

Two jitted programs per bucket: structure factors |F|² [B, R] (shapes B, R, S, E), then geometry,
merging, cut-off and smearing (shapes B, R only, and the slower one to compile).

Precision: the geometry (|g|, 2θ, the merge keys, the relative cut-off) runs in float64 inside
jax.enable_x64, because pymatgen merges reflections whose 2θ round to the same multiple of 1e-5°
and float32 2θ is only good to ~1e-5° at 90°. The bulk (phases, Gaussians) runs in float32:
phases come from an exact float32 split of h·r and a polynomial cos/sin (XLA's CPU cos/sin are
scalar calls, ~7× slower), good to ~1e-6 rad.

Both programs loop (lax.map) over chunks of structures (and of reflections for very large cells)
so that their [rows, R, S] and [rows, R, 63] temporaries stay in cache: 3-4× faster on CPU than
one pass over the bucket, and peak memory stays bounded for 200-site cells.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.xrd_engine import planning

# Fractional coordinates are split into a multiple of 2^-12 (h·x_hi is then exact in float32 for
# |h| < 2^9) and a small remainder, so that h·r mod 1 keeps float32's full precision.
_SPLIT = 4096.0
# Reflection-site pairs per structure-factor chunk and reflections per smearing chunk: cache-sized
# on CPU; on an accelerator only a memory bound (its parallelism wants whole buckets).
_CHUNKS = {"cpu": dict(pairs_per_chunk=2 ** 20, reflections_per_chunk=2 ** 15),
           "other": dict(pairs_per_chunk=2 ** 26, reflections_per_chunk=2 ** 21)}


def _rows_per_chunk(batch: int, per_row: int, budget: int) -> int:
  """The largest power of two ≤ batch (a power of two) with rows × per_row ≤ budget (≥ 1)."""
  rows = max(1, min(batch, budget // max(per_row, 1)))
  return 1 << (rows.bit_length() - 1)


def _map_rows(fn, rows: int, *arrays):
  """fn over consecutive chunks of `rows` structures (leading axis), results re-joined."""
  batch = arrays[0].shape[0]
  if rows >= batch:
    return fn(*arrays)
  chunks = tuple(a.reshape((batch // rows, rows) + a.shape[1:]) for a in arrays)
  out = lax.map(lambda xs: fn(*xs), chunks)
  return jax.tree.map(lambda o: o.reshape((batch,) + o.shape[2:]), out)


def _g_vectors(lattice, hkl):
  """Cartesian h a* + k b* + l c*, three float64 [B, R] components (explicit sums: a 3×3 batched
  dot is slow); hkl [B, R, 3] integer or float; a*, b*, c* (1/Å, no 2π) from cross products."""
  a, b, c = lattice[:, 0], lattice[:, 1], lattice[:, 2]
  volume = jnp.sum(a * jnp.cross(b, c), axis=-1)[:, None]
  recip = jnp.stack([jnp.cross(b, c) / volume, jnp.cross(c, a) / volume,
                     jnp.cross(a, b) / volume], axis=1)[:, None]          # [B, 1, 3, 3]
  h = hkl.astype(jnp.float64)
  return [h[..., 0] * recip[..., 0, d] + h[..., 1] * recip[..., 1, d]
          + h[..., 2] * recip[..., 2, d] for d in range(3)]


def _norm2(points):
  return points[0] * points[0] + points[1] * points[1] + points[2] * points[2]


def _sample_factor(lattice, g, g2, texture_hkl, march_r, b_factor):
  """March–Dollase × Debye–Waller factor per reflection, float64 [B, R] (sample.py's physics;
  exactly 1 for neutral values); g: the reflections' _g_vectors, g2 their |g|²."""
  axis = _g_vectors(lattice, texture_hkl[:, None, :])      # [B, 1] each
  axis2 = _norm2(axis)
  textured = (axis2 > 0) & (g2 > 0)
  cos2 = jnp.where(textured, (g[0] * axis[0] + g[1] * axis[1] + g[2] * axis[2]) ** 2
                   / jnp.where(textured, g2 * axis2, 1.0), 1.0)
  r = march_r[:, None]
  march = jnp.where(textured, (r * r * cos2 + (1 - cos2) / r) ** -1.5, 1.0)
  # exp(−2 B s²) with s = |g| / 2.
  return march * jnp.exp(-b_factor[:, None] * g2 / 2)


def _intensity_unscaled(hkl, s2, frac_hi, frac_lo, weights, coefficients, numbers):
  """|F|² of a chunk: hkl f32[b, r, 3], s2 f32[b, r] -> f32[b, r]."""
  # h·r mod 1 = frac(h·r_hi) (exact) + h·r_lo.
  def dot(x):
    return (hkl[..., None, 0] * x[:, None, :, 0] + hkl[..., None, 1] * x[:, None, :, 1]
            + hkl[..., None, 2] * x[:, None, :, 2])
  hi = dot(frac_hi)
  return physics.structure_factor(numbers, coefficients, s2, (hi - jnp.round(hi)) + dot(frac_lo),
                                  weights)


def _structure_factors(lattice, hkl, frac_coords, occupancies, slots, elements,
                       coefficient_table, *, pairs_per_chunk: int):
  """|F|² float32[B, R] of a padded bucket (call inside jax.enable_x64(True)).

  Args:
    lattice: f64[B, 3, 3]; hkl: i32[B, R, 3]; frac_coords: f64[B, S, 3]; occupancies: f64[B, S]
      (0 = padding); slots: i32[B, S] (index into elements); elements: i32[B, E] (0 = padding);
    coefficient_table: f64[MAX_Z + 1, 4, 2], scattering.scattering_table()[0].
    pairs_per_chunk: reflection-site pairs per pass (static).
  """
  f32 = jnp.float32
  batch, num_reflections, _ = hkl.shape
  sites, num_elements = occupancies.shape[1], elements.shape[1]
  s2 = (_norm2(_g_vectors(lattice, hkl)) / 4).astype(f32)
  frac = frac_coords - jnp.floor(frac_coords)
  frac_hi = jnp.round(frac * _SPLIT) / _SPLIT
  frac_lo = (frac - frac_hi).astype(f32)
  frac_hi = frac_hi.astype(f32)
  weights = (occupancies[..., None] * (slots[..., None] == jnp.arange(num_elements))).astype(f32)
  coefficients = coefficient_table[elements].astype(f32)
  numbers = elements.astype(f32)
  hkl = hkl.astype(f32)
  per_row = num_reflections * sites
  if per_row <= pairs_per_chunk:
    rows = _rows_per_chunk(batch, per_row, pairs_per_chunk)
    return _map_rows(_intensity_unscaled, rows, hkl, s2, frac_hi, frac_lo, weights,
                     coefficients, numbers)

  # One structure at a time, its reflections in chunks.
  chunks = -(-per_row // pairs_per_chunk)
  size = -(-num_reflections // chunks)
  pad = chunks * size - num_reflections

  def one(hkl, s2, *per_structure):
    hkl = jnp.pad(hkl, ((0, pad), (0, 0))).reshape(chunks, 1, size, 3)
    s2 = jnp.pad(s2, (0, pad)).reshape(chunks, 1, size)
    single = tuple(x[None] for x in per_structure)
    out = lax.map(lambda xs: _intensity_unscaled(xs[0], xs[1], *single), (hkl, s2))
    return out.reshape(-1)[:num_reflections]

  return lax.map(lambda xs: one(*xs),
                 (hkl, s2, frac_hi, frac_lo, weights, coefficients, numbers))


def _patterns_rows(lattice, hkl, num_reflections, f_squared, texture_hkl, march_r, b_factor, *,
                   wavelength, sigma: float):
  """_patterns for one chunk of structures."""
  f64, f32 = jnp.float64, jnp.float32
  batch, num_rows, _ = hkl.shape
  valid = jnp.arange(num_rows)[None, :] < num_reflections[:, None]
  # Geometry in float64: 2θ and the Lorentz-polarisation factor.
  g = _g_vectors(lattice, hkl)
  g2 = _norm2(g)
  sin_theta = jnp.where(valid, jnp.minimum(physics.bragg_sin_theta(jnp.sqrt(g2), wavelength), 1.0),
                        0.5)
  two_theta = physics.two_theta(sin_theta)
  intensity = jnp.where(valid, f_squared.astype(f64) * physics.lorentz_polarisation(sin_theta)
                        * _sample_factor(lattice, g, g2, texture_hkl, march_r, b_factor), 0.0)

  # Merge runs of equal round(2θ / tol) (the list is in |g| order, so equal keys are adjacent),
  # then apply pymatgen's cut-off to the merged intensities.
  keys = jnp.round(two_theta / planning.TWO_THETA_TOL)
  first = valid & jnp.concatenate(
      [jnp.ones((batch, 1), bool), keys[:, 1:] != keys[:, :-1]], axis=1)
  segment = (jnp.cumsum(first, axis=1) - 1 + jnp.arange(batch)[:, None] * num_rows).reshape(-1)
  merged = jax.ops.segment_sum(intensity.reshape(-1), segment, num_segments=batch * num_rows,
                               indices_are_sorted=True)
  strongest = jnp.max(merged.reshape(batch, num_rows), axis=1, keepdims=True)
  relative = (100 * merged[segment].reshape(batch, num_rows)
              / jnp.where(strongest > 0, strongest, 1.0))
  stick = first & (relative > planning.SCALED_INTENSITY_TOL)
  stick_intensity = jnp.where(stick, relative, 0.0)

  # Gaussian smearing as xrd.smear_sticks: each stick on the grid points within its window
  # around the nearest one, one windowed scatter-add into a grid padded by the window.
  half = int(np.ceil(6.0 * sigma / constants.TWO_THETA_STEP))   # ±6σ, as xrd.smear_sticks
  width = 2 * half + 1
  start, step = constants.TWO_THETA_MIN, constants.TWO_THETA_STEP
  centre = jnp.where(stick, jnp.rint((two_theta - start) / step), 0.0)
  delta = (start + step * centre - two_theta).astype(f32)                  # [b, R]
  offsets = (step * jnp.arange(-half, half + 1)).astype(f32)
  gauss = jnp.exp(jnp.float32(-0.5 / sigma ** 2) * (delta[..., None] + offsets) ** 2)
  contributions = stick_intensity.astype(f32)[..., None] * gauss          # [b, R, width]
  padded = constants.NUM_XRD_POINTS + 2 * half + 1
  # The window of a stick with centre c covers padded positions c .. c + 2·half.
  position = (jnp.arange(batch)[:, None] * padded
              + jnp.clip(centre.astype(jnp.int32), 0, constants.NUM_XRD_POINTS))
  window_dims = lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(),
                                            scatter_dims_to_operand_dims=(0,))
  grid = lax.scatter_add(jnp.zeros(batch * padded, f32), position.reshape(-1, 1),
                         contributions.reshape(-1, width), window_dims,
                         indices_are_sorted=False, unique_indices=False)
  pattern = grid.reshape(batch, padded)[:, half:half + constants.NUM_XRD_POINTS]
  peak = jnp.max(pattern, axis=1, keepdims=True)
  pattern = pattern * (constants.XRD_MAX_INTENSITY / jnp.where(peak > 0, peak, 1.0))
  return pattern, peak[:, 0], jnp.where(stick, two_theta, 0.0), stick_intensity


def _patterns(lattice, hkl, num_reflections, wavelength, f_squared, texture_hkl, march_r,
              b_factor, *, sigma: float, reflections_per_chunk: int):
  """Merged, cut and smeared patterns of a bucket from its |F|² (inside jax.enable_x64(True)).

  Args:
    lattice: f64[B, 3, 3]; hkl: i32[B, R, 3] sorted by |g|, valid rows first;
    num_reflections: i32[B]; wavelength: Å, f64 scalar (traced: one compile for any);
    f_squared: f32[B, R] from _structure_factors; texture_hkl f64[B, 3], march_r f64[B],
    b_factor f64[B]: sample effects (sample.SampleEffects; neutral: 0, 1, 0);
    sigma: Gaussian σ in degrees (static);
    reflections_per_chunk: reflections per pass (static).

  Returns:
    (pattern f32[B, 4250] scaled to max 100 (zeros where nothing is on the grid), peak f32[B]
    (the unscaled maximum; 0 flags a pattern with nothing on the grid), stick_two_theta
    f64[B, R], stick_intensity f64[B, R] (pymatgen's sticks on the 0-100 scale; 0 elsewhere)).
  """
  rows = _rows_per_chunk(hkl.shape[0], hkl.shape[1], reflections_per_chunk)
  return _map_rows(functools.partial(_patterns_rows, wavelength=wavelength, sigma=sigma), rows,
                   lattice, hkl, num_reflections, f_squared, texture_hkl, march_r, b_factor)


# XLA's CPU backend (jax 0.10.2) fuses small reductions into YNNPACK kernels that return wrong
# values past row 4096 (e.g. Σ over the 4 form-factor terms of [1, 8192, 8, 4]): those fusions are
# off for the engine alone. Without the new fusion emitters both programs compile ~1.4× faster
# and the structure factors run ~1.4× faster on this CPU.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_use_fusion_emitters": False}


@functools.cache
def _jitted(backend: str):
  """(structure factors, patterns) jitted for a backend ("cpu" or "other")."""
  options = _CPU_OPTIONS if backend == "cpu" else None
  chunks = _CHUNKS[backend]
  return (jax.jit(functools.partial(_structure_factors,
                                    pairs_per_chunk=chunks["pairs_per_chunk"]),
                  compiler_options=options),
          jax.jit(functools.partial(_patterns,
                                    reflections_per_chunk=chunks["reflections_per_chunk"]),
                  static_argnames=("sigma",), compiler_options=options))


def simulate_padded(arrays: dict, wavelength, coefficient_table, *, sigma: float):
  """Patterns of one bucket packed by planning.pack (call inside jax.enable_x64(True)).

  Returns _patterns' tuple of device arrays (dispatched asynchronously).
  """
  structure_factors, patterns = _jitted("cpu" if jax.default_backend() == "cpu" else "other")
  f_squared = structure_factors(arrays["lattice"], arrays["hkl"], arrays["frac_coords"],
                                arrays["occupancies"], arrays["slots"], arrays["elements"],
                                coefficient_table)
  return patterns(arrays["lattice"], arrays["hkl"], arrays["num_reflections"], wavelength,
                  f_squared, arrays["texture_hkl"], arrays["march_r"], arrays["b_factor"],
                  sigma=sigma)
