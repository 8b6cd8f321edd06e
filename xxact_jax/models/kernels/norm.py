"""The post-LN residual block LayerNorm(x + dropout(h)) as one kernel forward and one backward.

XLA splits the block into a dropout fusion, the residual add and the two reductions of the norm,
forward and backward (17.9 ms of LayerNorm and most of the 14.7 ms of dropout fusions on the
paper-size H100 step). Here the forward reads x and h once and writes the normalised output and
two float32 statistics per row; the backward reads x, h and the output's gradient once, recomputes
the dropout mask from the seed, and writes the gradients of x and h together with per-program
partial sums of the scale and bias gradients (a few hundred rows of D floats, summed by XLA).

Rows are the flattened leading axes ([N, D]); a program normalises `rows` rows at a time, D padded
to a power of two with masked loads. Statistics are float32 (as flax's LayerNorm); the dropout
mask is the kernels' hash of each element's position (row·D + column, kernels/common.py).
"""

import dataclasses
import functools
import os

import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from xxact_jax.models.kernels import common

# Elements of a program's [rows, D] tile and programs of the backward pass (each loops over its
# share of the rows, accumulating the scale and bias gradients).
TILE_ELEMENTS = 8192
BACKWARD_PROGRAMS = 512


@dataclasses.dataclass(frozen=True)
class Dims:
  rows: int             # N
  features: int         # D
  dim_pad: int
  block: int            # rows per tile
  programs: int         # backward programs
  iters: int            # tiles per backward program
  rate: float
  bits: int
  epsilon: float
  interpret: bool
  warps: int


def make_dims(n, d, rate, bits, epsilon, interpret, tile_elements=None, programs=None) -> Dims:
  dim_pad = common.next_pow2(d)
  tile = tile_elements or int(os.environ.get("XXACT_NORM_TILE_ELEMENTS", TILE_ELEMENTS))
  block = max(1, min(common.next_pow2(n, 1), tile // dim_pad))
  tiles = -(-n // block)
  programs = programs or int(os.environ.get("XXACT_NORM_PROGRAMS", BACKWARD_PROGRAMS))
  programs = max(1, min(tiles, programs))
  iters = -(-tiles // programs)
  programs = -(-tiles // iters)
  return Dims(rows=n, features=d, dim_pad=dim_pad, block=block, programs=programs, iters=iters,
              rate=float(rate), bits=int(bits), epsilon=float(epsilon),
              interpret=common.resolve_interpret(interpret),
              warps=common.num_warps(4 if dim_pad <= 1024 else 8))


def _tile(d: Dims, tile):
  """(row slice, [block, dim_pad] validity, [dim_pad] column validity, row indices)."""
  start = tile * d.block
  r = start + lax.iota(jnp.int32, d.block)
  c = lax.iota(jnp.int32, d.dim_pad)
  col_ok = c < d.features
  mask = (r < d.rows)[:, None] & col_ok[None, :]
  return pl.ds(start, d.block), mask, col_ok, r


def _dropped(d: Dims, h, r, seed_ref):
  """h after dropout (float32) and the multiplier it was scaled by (None without dropout)."""
  if d.rate <= 0:
    return h, None
  seed0, seed1 = common.load_seed(seed_ref)
  c = lax.iota(jnp.int32, d.dim_pad)
  counter = (r[:, None] * d.features + c[None, :]).astype(jnp.uint32)
  keep = common.keep_from_counter(counter, seed0, seed1, d.rate, d.bits)
  _, scale = common.keep_threshold(d.rate, d.bits)
  multiplier = jnp.where(keep, jnp.float32(scale), jnp.float32(0.0))
  return h * multiplier, multiplier


def _normalised(d: Dims, z, col_ok):
  mean = jnp.sum(z, axis=1) / d.features
  centred = jnp.where(col_ok[None, :], z - mean[:, None], 0.0)
  var = jnp.sum(centred * centred, axis=1) / d.features
  rstd = lax.rsqrt(var + d.epsilon)
  return centred * rstd[:, None], mean, rstd


def _forward_kernel(x_ref, h_ref, scale_ref, bias_ref, seed_ref, y_ref, mean_ref, rstd_ref, *,
                    d: Dims):
  rows, mask, col_ok, r = _tile(d, pl.program_id(0))
  cols = pl.ds(0, d.dim_pad)
  x = plgpu.load(x_ref.at[rows, cols], mask=mask, other=0).astype(jnp.float32)
  h = plgpu.load(h_ref.at[rows, cols], mask=mask, other=0).astype(jnp.float32)
  h, _ = _dropped(d, h, r, seed_ref)
  zhat, mean, rstd = _normalised(d, x + h, col_ok)
  gamma = plgpu.load(scale_ref.at[cols], mask=col_ok, other=0)
  beta = plgpu.load(bias_ref.at[cols], mask=col_ok, other=0)
  y = zhat * gamma[None, :] + beta[None, :]
  plgpu.store(y_ref.at[rows, cols], y.astype(y_ref.dtype), mask=mask)
  row_ok = r < d.rows
  plgpu.store(mean_ref.at[rows], mean, mask=row_ok)
  plgpu.store(rstd_ref.at[rows], rstd, mask=row_ok)


def _backward_kernel(x_ref, h_ref, scale_ref, seed_ref, mean_ref, rstd_ref, dy_ref,
                     dx_ref, dh_ref, dscale_ref, dbias_ref, *, d: Dims):
  program = pl.program_id(0)
  cols = pl.ds(0, d.dim_pad)
  col_ok = lax.iota(jnp.int32, d.dim_pad) < d.features
  gamma = plgpu.load(scale_ref.at[cols], mask=col_ok, other=0)

  def body(i, carry):
    dgamma, dbeta = carry
    rows, mask, _, r = _tile(d, program * d.iters + i)
    row_ok = r < d.rows
    x = plgpu.load(x_ref.at[rows, cols], mask=mask, other=0).astype(jnp.float32)
    h = plgpu.load(h_ref.at[rows, cols], mask=mask, other=0).astype(jnp.float32)
    dy = plgpu.load(dy_ref.at[rows, cols], mask=mask, other=0).astype(jnp.float32)
    mean = plgpu.load(mean_ref.at[rows], mask=row_ok, other=0)
    rstd = plgpu.load(rstd_ref.at[rows], mask=row_ok, other=0)
    h, multiplier = _dropped(d, h, r, seed_ref)
    zhat = jnp.where(mask, (x + h - mean[:, None]) * rstd[:, None], 0.0)
    g = dy * gamma[None, :]
    mean_g = jnp.sum(g, axis=1) / d.features
    mean_gz = jnp.sum(g * zhat, axis=1) / d.features
    dz = jnp.where(mask, (g - mean_g[:, None] - zhat * mean_gz[:, None]) * rstd[:, None], 0.0)
    dh = dz if multiplier is None else dz * multiplier
    plgpu.store(dx_ref.at[rows, cols], dz.astype(dx_ref.dtype), mask=mask)
    plgpu.store(dh_ref.at[rows, cols], dh.astype(dh_ref.dtype), mask=mask)
    return dgamma + jnp.sum(dy * zhat, axis=0), dbeta + jnp.sum(dy, axis=0)

  zero = jnp.zeros((d.dim_pad,), jnp.float32)
  dgamma, dbeta = lax.fori_loop(0, d.iters, body, (zero, zero))
  part = pl.ds(program, 1)
  plgpu.store(dscale_ref.at[part, cols], dgamma[None, :], mask=col_ok[None, :])
  plgpu.store(dbias_ref.at[part, cols], dbeta[None, :], mask=col_ok[None, :])


def _forward_call(d: Dims, x, h, scale, bias, seed, out_dtype):
  return pl.pallas_call(
      functools.partial(_forward_kernel, d=d),
      out_shape=[jax.ShapeDtypeStruct((d.rows, d.features), out_dtype),
                 jax.ShapeDtypeStruct((d.rows,), jnp.float32),
                 jax.ShapeDtypeStruct((d.rows,), jnp.float32)],
      grid=(-(-d.rows // d.block),), interpret=d.interpret,
      compiler_params=common.compiler_params(d.warps), name="xxact_residual_norm_fwd",
  )(x, h, scale, bias, seed)


def _backward_call(d: Dims, x, h, scale, seed, mean, rstd, dy):
  dx, dh, dscale, dbias = pl.pallas_call(
      functools.partial(_backward_kernel, d=d),
      out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(h.shape, h.dtype),
                 jax.ShapeDtypeStruct((d.programs, d.features), jnp.float32),
                 jax.ShapeDtypeStruct((d.programs, d.features), jnp.float32)],
      grid=(d.programs,), interpret=d.interpret,
      compiler_params=common.compiler_params(d.warps), name="xxact_residual_norm_bwd",
  )(x, h, scale, seed, mean, rstd, dy)
  return dx, dh, jnp.sum(dscale, axis=0), jnp.sum(dbias, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _residual_norm(d: Dims, out_dtype, x, h, scale, bias, seed):
  return _forward_call(d, x, h, scale, bias, seed, out_dtype)[0]


def _fwd(d, out_dtype, x, h, scale, bias, seed):
  y, mean, rstd = _forward_call(d, x, h, scale, bias, seed, out_dtype)
  return y, (x, h, scale, seed, mean, rstd)


def _bwd(d, out_dtype, residuals, dy):
  del out_dtype
  x, h, scale, seed, mean, rstd = residuals
  dx, dh, dscale, dbias = _backward_call(d, x, h, scale, seed, mean, rstd, dy)
  return dx, dh, dscale, dbias, None


_residual_norm.defvjp(_fwd, _bwd)


def residual_layer_norm(x: jax.Array, h: jax.Array, scale: jax.Array, bias: jax.Array,
                        seed: jax.Array | None = None, rate: float = 0.0, bits: int = 16,
                        epsilon: float = 1e-5, dtype=None, interpret: bool | None = None,
                        tile_elements: int | None = None,
                        programs: int | None = None) -> jax.Array:
  """LayerNorm(x + dropout(h)) · scale + bias over the last axis.

  Args:
    x, h: [..., D] (the residual stream and the sublayer's output), same shape and dtype.
    scale, bias: [D] (float32 parameters).
    seed: int32[2] seed words (common.seed_words) when rate > 0.
    rate, bits: dropout on h (as `LayerConfig`); 0 in evaluation.
    epsilon: the norm's epsilon.
    dtype: output dtype (default x's).
    interpret: Pallas interpret mode (default: everywhere but on a GPU).
    tile_elements, programs: a tile's elements and the backward's programs (defaults above, or
      XXACT_NORM_TILE_ELEMENTS / XXACT_NORM_PROGRAMS).
  """
  if x.shape != h.shape:
    raise ValueError(f"x and h must have one shape, got {x.shape} and {h.shape}")
  *lead, features = x.shape
  n = 1
  for s in lead:
    n *= s
  d = make_dims(n, features, rate, bits, epsilon, interpret, tile_elements, programs)
  seed = jnp.zeros((2,), jnp.int32) if seed is None else seed.astype(jnp.int32)
  y = _residual_norm(d, jnp.dtype(dtype or x.dtype), x.reshape(n, features),
                     h.astype(x.dtype).reshape(n, features), scale.astype(jnp.float32),
                     bias.astype(jnp.float32), seed)
  return y.reshape(x.shape)


def keep_mask(seed: jax.Array, shape: tuple, rate: float, bits: int) -> jax.Array:
  """bool[shape]: the elements of h the kernel keeps under `seed` (element at row·D + column)."""
  return common.keep_mask(seed, tuple(shape), rate, bits)
