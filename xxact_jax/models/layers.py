"""Post-LN transformer layers for short sequences (as PyTorch's nn.TransformerEncoderLayer).

Sequences here are tiny (18 XRD tokens, at most ~11 composition tokens), so attention is two
einsums with the softmax in float32; a flash kernel would not pay for itself. Projections are
fused (one Dense for q, k, v; one for k, v in cross-attention) so each is a single matmul.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's LayerNorm epsilon (CrabNet and the paper's encoders use the PyTorch default).
LAYER_NORM_EPSILON = 1e-5


def dense_general(features, name: str, dtype: Dtype, axis=-1) -> nn.DenseGeneral:
  return nn.DenseGeneral(features, axis=axis, dtype=dtype, param_dtype=jnp.float32, name=name)


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, param_dtype=jnp.float32, name=name)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None,
           dropout: nn.Module) -> jax.Array:
  """Scaled dot-product attention.

  Args:
    q: [B, Q, H, Dh] queries.
    k: [B, K, H, Dh] keys.
    v: [B, K, H, Dh] values.
    key_mask: optional bool [B, K], True where a key may be attended to.
    dropout: applied to the attention weights (as PyTorch's MultiheadAttention).

  Returns:
    [B, Q, H, Dh] in the dtype of `v`.
  """
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  if key_mask is not None:
    # finfo.min rather than -inf: exp underflows to exactly 0 and never produces NaN.
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  weights = dropout(weights)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class SelfAttention(nn.Module):
  """Multi-head self-attention with one fused QKV projection."""
  num_heads: int
  dropout: float
  dtype: Dtype
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    d_model = x.shape[-1]
    head_dim = d_model // self.num_heads
    qkv = dense_general((3, self.num_heads, head_dim), "qkv", self.dtype)(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = attend(q, k, v, mask, nn.Dropout(self.dropout, deterministic=self.deterministic))
    return dense_general(d_model, "out", self.dtype, axis=(-2, -1))(out)


class CrossAttention(nn.Module):
  """Multi-head attention of `x` (queries) over `memory` (keys/values, fused KV projection)."""
  num_heads: int
  dropout: float
  dtype: Dtype
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None) -> jax.Array:
    d_model = x.shape[-1]
    head_dim = d_model // self.num_heads
    q = dense_general((self.num_heads, head_dim), "q", self.dtype)(x)
    kv = dense_general((2, self.num_heads, head_dim), "kv", self.dtype)(memory)
    out = attend(q, kv[:, :, 0], kv[:, :, 1], memory_mask,
                 nn.Dropout(self.dropout, deterministic=self.deterministic))
    return dense_general(d_model, "out", self.dtype, axis=(-2, -1))(out)


class FeedForward(nn.Module):
  """Linear -> ReLU -> dropout -> Linear (PyTorch's transformer feed-forward block)."""
  d_ff: int
  dropout: float
  dtype: Dtype
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(dense_general(self.d_ff, "fc1", self.dtype)(x))
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    return dense_general(x.shape[-1], "fc2", self.dtype)(h)


class EncoderLayer(nn.Module):
  """Post-LN encoder layer: x = LN(x + SA(x)); x = LN(x + FFN(x))."""
  num_heads: int
  d_ff: int
  dropout: float
  dtype: Dtype
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    drop = lambda: nn.Dropout(self.dropout, deterministic=self.deterministic)
    h = SelfAttention(self.num_heads, self.dropout, self.dtype, self.deterministic,
                      name="self_attention")(x, mask)
    x = layer_norm("norm1", self.dtype)(x + drop()(h))
    h = FeedForward(self.d_ff, self.dropout, self.dtype, self.deterministic, name="ffn")(x)
    return layer_norm("norm2", self.dtype)(x + drop()(h))


class DecoderLayer(nn.Module):
  """Post-LN decoder layer: self-attention, cross-attention over `memory`, feed-forward."""
  num_heads: int
  d_ff: int
  dropout: float
  dtype: Dtype
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None) -> jax.Array:
    drop = lambda: nn.Dropout(self.dropout, deterministic=self.deterministic)
    h = SelfAttention(self.num_heads, self.dropout, self.dtype, self.deterministic,
                      name="self_attention")(x, None)
    x = layer_norm("norm1", self.dtype)(x + drop()(h))
    h = CrossAttention(self.num_heads, self.dropout, self.dtype, self.deterministic,
                       name="cross_attention")(x, memory, memory_mask)
    x = layer_norm("norm2", self.dtype)(x + drop()(h))
    h = FeedForward(self.d_ff, self.dropout, self.dtype, self.deterministic, name="ffn")(x)
    return layer_norm("norm3", self.dtype)(x + drop()(h))


def maybe_remat(layer_cls: type[nn.Module], remat: bool) -> type[nn.Module]:
  """Rematerialises a layer in the backward pass when `remat` (trades FLOPs for memory)."""
  return nn.remat(layer_cls) if remat else layer_cls


class TransformerEncoder(nn.Module):
  """A stack of post-LN encoder layers (no final norm, as nn.TransformerEncoder's default)."""
  num_layers: int
  num_heads: int
  d_ff: int
  dropout: float
  dtype: Dtype
  remat: bool
  deterministic: bool

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    layer_cls = maybe_remat(EncoderLayer, self.remat)
    for i in range(self.num_layers):
      x = layer_cls(self.num_heads, self.d_ff, self.dropout, self.dtype, self.deterministic,
                    name=f"layer_{i}")(x, mask)
    return x
