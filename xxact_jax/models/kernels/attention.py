"""Fused multi-head attention for short sequences (T ≤ a few dozen), forward and backward.

The einsum path (models/layers.py `attend`) moves q, k, v from the fused projection's layout
[B, T, 3, H, Dh] to the [B·H, T, Dh] of batched products and back, and runs tiny memory-bound
products; on the paper-size H100 step that glue was 43 ms of 183 (benchmarks/RESULTS.md). Here
one program reads the q, k, v of a few whole sequences and one head straight from the
projection's output (viewed as [B·T, slots·H·Dh], a free reshape), computes the scores, the
masked softmax in float32, dropout on the weights from an in-kernel hash of each weight's
position (kernels/common.py), and the weighted values, and writes [B, T, H, Dh], the layout the
output projection reads. The backward pass recomputes the weights (nothing of size T² is stored)
and writes dq, dk, dv into the slots of one [B, T, 3, H, Dh] gradient for self-attention, so the
projection's backward reads it as it is.

Packing: a program takes `n` consecutive sequences (their rows are contiguous) so that its
query and key blocks, padded to powers of two for Triton, are about `block_rows` rows; scores
between different sequences and padding rows are excluded. With T = 18 and block_rows 128 that is
7 sequences in a 128 × 128 score block.

Semantics match `layers.attend`: logits of masked keys are float32's minimum (a row with every
key masked attends uniformly to all of them), the softmax is float32, the weights are cast to the
values' dtype before the product, and kept weights are scaled by 1 / P(keep).
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

BLOCK_ROWS = 128


def block_rows() -> int:
  """Target rows of a program's query/key block; XXACT_ATTENTION_BLOCK_ROWS overrides."""
  return int(os.environ.get("XXACT_ATTENTION_BLOCK_ROWS", BLOCK_ROWS))


@dataclasses.dataclass(frozen=True)
class Dims:
  """Static description of one attention call (hashable: a custom_vjp non-differentiable arg)."""
  batch: int
  q_len: int
  kv_len: int
  heads: int
  head_dim: int
  q_slots: int          # slots of the q array's [.., slots, H, Dh] (3 for fused qkv, 1 for q)
  kv_slots: int
  q_slot: int
  k_slot: int
  v_slot: int
  rate: float           # dropout on the weights (0: none)
  bits: int
  interpret: bool
  per_block: int        # sequences per program
  q_rows: int           # padded rows of the query block (power of 2)
  kv_rows: int
  dim_pad: int          # padded head dimension (power of 2)
  warps: int

  @property
  def num_blocks(self) -> int:
    return -(-self.batch // self.per_block)

  @property
  def scale(self) -> float:
    return self.head_dim ** -0.5


def make_dims(batch, q_len, kv_len, heads, head_dim, q_slots, kv_slots, slots, rate, bits,
              interpret, rows=None) -> Dims:
  rows = block_rows() if rows is None else rows
  per_block = max(1, min(batch, rows // max(q_len, kv_len)))
  return Dims(batch=batch, q_len=q_len, kv_len=kv_len, heads=heads, head_dim=head_dim,
              q_slots=q_slots, kv_slots=kv_slots, q_slot=slots[0], k_slot=slots[1],
              v_slot=slots[2], rate=float(rate), bits=int(bits),
              interpret=common.resolve_interpret(interpret), per_block=per_block,
              q_rows=common.next_pow2(per_block * q_len),
              kv_rows=common.next_pow2(per_block * kv_len),
              dim_pad=common.next_pow2(head_dim), warps=common.num_warps(4))


# ---------------------------------------------------------------------------------------------
# Kernel pieces


def _rows(block, rows_pad, seq_len, per_block, batch):
  """(slice of a program's rows in [B·T, ...], valid rows): `per_block` whole sequences."""
  local = lax.iota(jnp.int32, rows_pad)
  here = jnp.minimum(per_block, batch - block * per_block) * seq_len
  return pl.ds(block * (per_block * seq_len), rows_pad), local < here


def _cols(d: Dims, slot: int, head):
  """(slice of head `head`'s columns in slot `slot`, valid columns or None)."""
  cols = pl.ds((slot * d.heads + head) * d.head_dim, d.dim_pad)
  if d.dim_pad == d.head_dim:
    return cols, None
  return cols, lax.iota(jnp.int32, d.dim_pad) < d.head_dim


def _mask(row_valid, col_valid, shape):
  mask = row_valid[:, None]
  if col_valid is not None:
    mask = mask & col_valid[None, :]
  return jnp.broadcast_to(mask, shape)


def _load(ref, rows, row_valid, cols, col_valid, shape):
  return plgpu.load(ref.at[rows, cols], mask=_mask(row_valid, col_valid, shape), other=0)


def _store(ref, rows, row_valid, cols, col_valid, value):
  plgpu.store(ref.at[rows, cols], value.astype(ref.dtype),
              mask=_mask(row_valid, col_valid, value.shape))


def _dot(a, b, contract):
  """2-D product with float32 accumulation; contract = (a's axis, b's axis). HIGHEST keeps
  float32 inputs in IEEE float32 on the GPU (not TF32); bfloat16 inputs are unaffected."""
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                         precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def _weights(d: Dims, block, head, q, k, valid_ref, seed_ref):
  """(softmax weights p [RQ, RK] float32, kept ∧ scaled multiplier or None, logit mask)."""
  q_local = lax.iota(jnp.int32, d.q_rows)
  k_local = lax.iota(jnp.int32, d.kv_rows)
  n_here = jnp.minimum(d.per_block, d.batch - block * d.per_block)
  q_seq = lax.div(q_local, d.q_len)
  k_seq = lax.div(k_local, d.kv_len)
  structural = ((q_seq[:, None] == k_seq[None, :]) & (q_seq < n_here)[:, None]
                & (k_seq < n_here)[None, :])
  k_rows, k_valid = _rows(block, d.kv_rows, d.kv_len, d.per_block, d.batch)
  key_ok = plgpu.load(valid_ref.at[k_rows], mask=k_valid, other=0) != 0
  usable = structural & key_ok[None, :]
  s = _dot(q, k, (1, 1)) * d.scale
  lowest = jnp.finfo(jnp.float32).min
  s = jnp.where(usable, s, lowest)
  m = jnp.max(s, axis=1)
  p = jnp.where(structural, jnp.exp(s - m[:, None]), 0.0)
  total = jnp.sum(p, axis=1)
  p = p / jnp.where(total > 0, total, 1.0)[:, None]
  multiplier = None
  if d.rate > 0:
    seed0, seed1 = common.load_seed(seed_ref)
    b = block * d.per_block + q_seq
    t_q = q_local - q_seq * d.q_len
    t_k = k_local - k_seq * d.kv_len
    row_base = ((b * d.heads + head) * d.q_len + t_q) * d.kv_len
    counter = (row_base[:, None] + t_k[None, :]).astype(jnp.uint32)
    keep = common.keep_from_counter(counter, seed0, seed1, d.rate, d.bits)
    _, kept_scale = common.keep_threshold(d.rate, d.bits)
    multiplier = jnp.where(keep, jnp.float32(kept_scale), jnp.float32(0.0))
  return p, multiplier, usable


def _inputs(d: Dims, q_ref, kv_ref, block, head):
  q_rows, q_valid = _rows(block, d.q_rows, d.q_len, d.per_block, d.batch)
  k_rows, k_valid = _rows(block, d.kv_rows, d.kv_len, d.per_block, d.batch)
  qc, cv = _cols(d, d.q_slot, head)
  kc, _ = _cols(d, d.k_slot, head)
  vc, _ = _cols(d, d.v_slot, head)
  q = _load(q_ref, q_rows, q_valid, qc, cv, (d.q_rows, d.dim_pad))
  k = _load(kv_ref, k_rows, k_valid, kc, cv, (d.kv_rows, d.dim_pad))
  v = _load(kv_ref, k_rows, k_valid, vc, cv, (d.kv_rows, d.dim_pad))
  return (q_rows, q_valid, k_rows, k_valid, qc, kc, vc, cv), (q, k, v)


def _forward_kernel(q_ref, kv_ref, valid_ref, seed_ref, o_ref, *, d: Dims):
  block, head = pl.program_id(0), pl.program_id(1)
  (q_rows, q_valid, _, _, _, _, _, cv), (q, k, v) = _inputs(d, q_ref, kv_ref, block, head)
  p, multiplier, _ = _weights(d, block, head, q, k, valid_ref, seed_ref)
  w = p.astype(v.dtype)
  if multiplier is not None:
    w = w * multiplier.astype(v.dtype)
  out = _dot(w, v, (1, 0))
  oc, _ = _cols(d, 0, head)
  _store(o_ref, q_rows, q_valid, oc, cv, out)


def _backward_kernel(q_ref, kv_ref, valid_ref, seed_ref, do_ref, *out_refs, d: Dims):
  if len(out_refs) == 1:          # self-attention: one [B·T, 3·H·Dh] gradient
    dq_ref = dkv_ref = out_refs[0]
  else:
    dq_ref, dkv_ref = out_refs
  block, head = pl.program_id(0), pl.program_id(1)
  (q_rows, q_valid, k_rows, k_valid, qc, kc, vc, cv), (q, k, v) = _inputs(
      d, q_ref, kv_ref, block, head)
  oc, _ = _cols(d, 0, head)
  do = _load(do_ref, q_rows, q_valid, oc, cv, (d.q_rows, d.dim_pad))
  p, multiplier, usable = _weights(d, block, head, q, k, valid_ref, seed_ref)
  w = p.astype(v.dtype)
  if multiplier is not None:
    w = w * multiplier.astype(v.dtype)
  dv = _dot(w, do, (0, 0))
  dw = _dot(do, v, (1, 1))
  dp = dw if multiplier is None else dw * multiplier
  delta = jnp.sum(dp * p, axis=1)
  ds = jnp.where(usable, p * (dp - delta[:, None]), 0.0) * d.scale
  ds = ds.astype(q.dtype)
  dq = _dot(ds, k, (1, 0))
  dk = _dot(ds, q, (0, 0))
  _store(dq_ref, q_rows, q_valid, qc, cv, dq)
  _store(dkv_ref, k_rows, k_valid, kc, cv, dk)
  _store(dkv_ref, k_rows, k_valid, vc, cv, dv)


def _forward_call(d: Dims, q2, kv2, valid, seed):
  out_shape = jax.ShapeDtypeStruct((d.batch * d.q_len, d.heads * d.head_dim), q2.dtype)
  return pl.pallas_call(
      functools.partial(_forward_kernel, d=d), out_shape=out_shape,
      grid=(d.num_blocks, d.heads), interpret=d.interpret,
      compiler_params=common.compiler_params(d.warps), name="xxact_attention_fwd",
  )(q2, kv2, valid, seed)


def _backward_call(d: Dims, q2, kv2, valid, seed, do2, fused: bool):
  if fused:
    out_shape = [jax.ShapeDtypeStruct(q2.shape, q2.dtype)]
  else:
    out_shape = [jax.ShapeDtypeStruct(q2.shape, q2.dtype),
                 jax.ShapeDtypeStruct(kv2.shape, kv2.dtype)]
  return pl.pallas_call(
      functools.partial(_backward_kernel, d=d), out_shape=out_shape,
      grid=(d.num_blocks, d.heads), interpret=d.interpret,
      compiler_params=common.compiler_params(d.warps), name="xxact_attention_bwd",
  )(q2, kv2, valid, seed, do2)


# ---------------------------------------------------------------------------------------------
# Differentiable entry points


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _self_attention(d: Dims, qkv2, valid, seed):
  return _forward_call(d, qkv2, qkv2, valid, seed)


def _self_fwd(d, qkv2, valid, seed):
  return _forward_call(d, qkv2, qkv2, valid, seed), (qkv2, valid, seed)


def _self_bwd(d, residuals, do2):
  qkv2, valid, seed = residuals
  [dqkv] = _backward_call(d, qkv2, qkv2, valid, seed, do2, fused=True)
  return dqkv, None, None


_self_attention.defvjp(_self_fwd, _self_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cross_attention(d: Dims, q2, kv2, valid, seed):
  return _forward_call(d, q2, kv2, valid, seed)


def _cross_fwd(d, q2, kv2, valid, seed):
  return _forward_call(d, q2, kv2, valid, seed), (q2, kv2, valid, seed)


def _cross_bwd(d, residuals, do2):
  q2, kv2, valid, seed = residuals
  dq, dkv = _backward_call(d, q2, kv2, valid, seed, do2, fused=False)
  return dq, dkv, None, None


_cross_attention.defvjp(_cross_fwd, _cross_bwd)


def _valid_rows(key_mask, batch, kv_len):
  if key_mask is None:
    return jnp.ones((batch * kv_len,), jnp.int32)
  return key_mask.reshape(batch * kv_len).astype(jnp.int32)


def _seed(seed):
  return jnp.zeros((2,), jnp.int32) if seed is None else seed.astype(jnp.int32)


def self_attention(qkv: jax.Array, key_mask: jax.Array | None, seed: jax.Array | None = None,
                   rate: float = 0.0, bits: int = 16, interpret: bool | None = None,
                   rows: int | None = None) -> jax.Array:
  """Self-attention on the fused projection's output.

  Args:
    qkv: [B, T, 3, H, Dh] (q, k, v along axis 2).
    key_mask: optional bool [B, T], True where a key may be attended to.
    seed: int32[2] seed words (common.seed_words) when rate > 0.
    rate: dropout rate on the attention weights (0 in evaluation).
    bits: `LayerConfig.dropout_bits` (the keep probability's resolution; 32 is drawn at 24).
    interpret: Pallas interpret mode (default: everywhere but on a GPU).
    rows: target block rows (default BLOCK_ROWS or XXACT_ATTENTION_BLOCK_ROWS).

  Returns:
    [B, T, H, Dh] in qkv's dtype.
  """
  b, t, slots, h, dh = qkv.shape
  if slots != 3:
    raise ValueError(f"qkv must be [B, T, 3, H, Dh], got {qkv.shape}")
  d = make_dims(b, t, t, h, dh, 3, 3, (0, 1, 2), rate, bits, interpret, rows)
  out = _self_attention(d, qkv.reshape(b * t, 3 * h * dh), _valid_rows(key_mask, b, t),
                        _seed(seed))
  return out.reshape(b, t, h, dh)


def cross_attention(q: jax.Array, kv: jax.Array, key_mask: jax.Array | None,
                    seed: jax.Array | None = None, rate: float = 0.0, bits: int = 16,
                    interpret: bool | None = None, rows: int | None = None) -> jax.Array:
  """Attention of q [B, Tq, H, Dh] over kv [B, Tk, 2, H, Dh] (k, v along axis 2); see
  `self_attention`. Returns [B, Tq, H, Dh]."""
  b, tq, h, dh = q.shape
  tk = kv.shape[1]
  if kv.shape != (b, tk, 2, h, dh):
    raise ValueError(f"kv must be [B, Tk, 2, H, Dh] matching q {q.shape}, got {kv.shape}")
  d = make_dims(b, tq, tk, h, dh, 1, 2, (0, 0, 1), rate, bits, interpret, rows)
  out = _cross_attention(d, q.reshape(b * tq, h * dh), kv.reshape(b * tk, 2 * h * dh),
                         _valid_rows(key_mask, b, tk), _seed(seed))
  return out.reshape(b, tq, h, dh)


def keep_mask(seed: jax.Array, batch: int, heads: int, q_len: int, kv_len: int, rate: float,
              bits: int) -> jax.Array:
  """bool [B, H, Tq, Tk]: the weights the kernel keeps under `seed` (for references/tests)."""
  return common.keep_mask(seed, (batch, heads, q_len, kv_len), rate, bits)


def reference(q, k, v, key_mask, keep=None, rate: float = 0.0, bits: int = 16):
  """The einsum path (`layers.attend`) with an explicit keep mask [B, H, Tq, Tk]."""
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  if keep is not None:
    _, scale = common.keep_threshold(rate, bits)
    weights = jnp.where(keep, weights * jnp.asarray(scale, v.dtype), jnp.zeros((), v.dtype))
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
