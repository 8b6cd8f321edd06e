"""Layers shared by every model: `LayerConfig`, dropout, dense/layer norm, attention, transformers.

The transformer layers are post-LN, as PyTorch's nn.TransformerEncoderLayer. Sequences here are
tiny (18 XRD tokens, at most ~11 composition tokens), so attention is two einsums with the softmax
in float32 and dropout on the attention weights, as PyTorch's MultiheadAttention. Projections are
fused (one Dense for q, k, v; one for k, v in cross-attention) so each is a single matmul.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's LayerNorm epsilon (CrabNet and the paper's encoders use the PyTorch default).
LAYER_NORM_EPSILON = 1e-5
DROPOUT_BITS = (32, 16, 8)
_NAMED_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> Dtype:
  """Maps a config dtype name to a jnp dtype; "auto" is bfloat16 on GPU/TPU, float32 on CPU."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in _NAMED_DTYPES:
    raise ValueError(f"model_config.dtype must be one of {['auto', *_NAMED_DTYPES]}, got {name!r}")
  return _NAMED_DTYPES[name]


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """What every layer needs besides its sizes; built once per forward pass by the model.

  Attributes:
    dropout: dropout rate.
    dtype: compute dtype (parameters are always float32).
    remat: rematerialise each transformer layer in the backward pass (trades FLOPs for memory).
    deterministic: disables dropout (evaluation).
    dropout_bits: 32 draws one 32-bit random number per element (flax's nn.Dropout); 16 or 8
      split each 32-bit draw into 2 or 4 narrower ones, with the keep probability rounded to
      a multiple of 2^-bits and the scale matched to it, so the output stays unbiased.
    fused_attention, fused_norm, fused_bias_grad: the Pallas kernels of models/kernels/
      (models/config.py `ModelConfig`); dropout drawn by the kernels' own hash at the same rate.
  """
  dropout: float
  dtype: Dtype
  remat: bool
  deterministic: bool
  dropout_bits: int = 32
  fused_attention: bool = False
  fused_norm: bool = False
  fused_bias_grad: bool = False

  def __post_init__(self):
    if self.dropout_bits not in DROPOUT_BITS:
      raise ValueError(f"model.dropout_bits must be one of {list(DROPOUT_BITS)}, "
                       f"got {self.dropout_bits!r}")

  @classmethod
  def from_model_config(cls, model_config, train: bool) -> "LayerConfig":
    """The layer config of a model config (models/config.py) in training or evaluation mode."""
    return cls(dropout=model_config.dropout, dtype=compute_dtype(model_config.dtype),
               remat=model_config.remat, deterministic=not train,
               dropout_bits=model_config.dropout_bits,
               fused_attention=model_config.fused_attention, fused_norm=model_config.fused_norm,
               fused_bias_grad=model_config.fused_bias_grad)


def dense_general(features, name: str, dtype: Dtype, axis=-1) -> nn.DenseGeneral:
  return nn.DenseGeneral(features, axis=axis, dtype=dtype, param_dtype=jnp.float32, name=name)


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, param_dtype=jnp.float32, name=name)


def quantised_keep_threshold(keep_prob: float, bits: int) -> int:
  """Integer t with P(uniform `bits`-bit draw < t) = t / 2^bits, the nearest to keep_prob."""
  return int(min(max(round(keep_prob * 2 ** bits), 1), 2 ** bits))


def keep_mask(rng: jax.Array, shape: tuple, keep_prob: float, bits: int) -> jax.Array:
  """bool[shape], True with probability quantised_keep_threshold(keep_prob, bits) / 2^bits.

  Draws 32-bit words along the last axis only (leading, batch axes keep their sharding) and
  reinterprets each as 32 // bits narrower draws.
  """
  per_word = 32 // bits
  last = shape[-1]
  words = jax.random.bits(rng, (*shape[:-1], -(-last // per_word)), jnp.uint32)
  if per_word > 1:
    words = jax.lax.bitcast_convert_type(words, jnp.dtype(f"uint{bits}"))
    words = words.reshape(*shape[:-1], -1)[..., :last]
  # Compared as int32 so that a threshold of 2^bits (keep everything) is representable.
  return words.astype(jnp.int32) < quantised_keep_threshold(keep_prob, bits)


class NarrowBitsDropout(nn.Module):
  """Dropout from 8- or 16-bit random draws (see `LayerConfig.dropout_bits`)."""
  rate: float
  deterministic: bool
  bits: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.deterministic or self.rate == 0.0:
      return x
    keep_prob = 1.0 - self.rate
    kept = quantised_keep_threshold(keep_prob, self.bits) / 2 ** self.bits
    keep = keep_mask(self.make_rng("dropout"), x.shape, keep_prob, self.bits)
    return jnp.where(keep, x * jnp.asarray(1.0 / kept, x.dtype), jnp.zeros((), x.dtype))


def dropout(config: LayerConfig) -> nn.Module:
  """A dropout module at the config's rate; flax's nn.Dropout for 32-bit draws."""
  if config.dropout_bits == 32:
    return nn.Dropout(config.dropout, deterministic=config.deterministic)
  return NarrowBitsDropout(config.dropout, config.deterministic, config.dropout_bits)


def kernel_dropout(module: nn.Module, config: LayerConfig) -> tuple[float, jax.Array | None]:
  """(rate, seed words) of a fused kernel's dropout: rate 0 and no seed when it is off."""
  if config.deterministic or config.dropout == 0.0:
    return 0.0, None
  from xxact_jax.models.kernels import common  # pylint: disable=g-import-not-at-top
  return config.dropout, common.seed_words(module.make_rng("dropout"))


def layer_dense(config: LayerConfig, features, name: str, axis=-1) -> nn.Module:
  """A transformer layer's dense layer: nn.DenseGeneral, or the same parameters with the bias
  gradient by kernel (`config.fused_bias_grad`)."""
  if config.fused_bias_grad:
    from xxact_jax.models.kernels import bias  # pylint: disable=g-import-not-at-top
    return bias.Dense(features, axis=axis, dtype=config.dtype, name=name)
  return dense_general(features, name, config.dtype, axis=axis)


class FusedResidualNorm(nn.Module):
  """LayerNorm(x + dropout(h)) in one kernel (models/kernels/norm.py); nn.LayerNorm's params."""
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, h: jax.Array) -> jax.Array:
    from xxact_jax.models.kernels import norm  # pylint: disable=g-import-not-at-top
    cfg = self.layer_config
    scale = self.param("scale", nn.initializers.ones_init(), (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (x.shape[-1],), jnp.float32)
    rate, seed = kernel_dropout(self, cfg)
    return norm.residual_layer_norm(x.astype(cfg.dtype), h.astype(cfg.dtype), scale, bias, seed,
                                    rate, cfg.dropout_bits, LAYER_NORM_EPSILON, cfg.dtype)


def residual_norm(config: LayerConfig, name: str, x: jax.Array, h: jax.Array) -> jax.Array:
  """The post-LN residual block LayerNorm(x + dropout(h)), called inside a layer's compact
  method (the unfused path keeps its submodules' names)."""
  if config.fused_norm:
    return FusedResidualNorm(config, name=name)(x, h)
  return layer_norm(name, config.dtype)(x + dropout(config)(h))


def attend(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None,
           dropout_module: nn.Module) -> jax.Array:
  """Scaled dot-product attention.

  q: [B, Q, H, Dh] queries; k, v: [B, K, H, Dh] keys and values; key_mask: optional bool [B, K],
  True where a key may be attended to; dropout_module: applied to the attention weights (as
  PyTorch's MultiheadAttention). Returns [B, Q, H, Dh] in the dtype of `v`.
  """
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  if key_mask is not None:
    # finfo.min rather than -inf: exp underflows to exactly 0 and never produces NaN.
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  weights = dropout_module(weights)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class SelfAttention(nn.Module):
  """Multi-head self-attention with one fused QKV projection."""
  num_heads: int
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    d_model = x.shape[-1]
    head_dim = d_model // self.num_heads
    cfg = self.layer_config
    qkv = layer_dense(cfg, (3, self.num_heads, head_dim), "qkv")(x)
    if cfg.fused_attention:
      from xxact_jax.models.kernels import attention  # pylint: disable=g-import-not-at-top
      rate, seed = kernel_dropout(self, cfg)
      out = attention.self_attention(qkv, mask, seed, rate, cfg.dropout_bits)
    else:
      q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
      out = attend(q, k, v, mask, dropout(cfg))
    return layer_dense(cfg, d_model, "out", axis=(-2, -1))(out)


class CrossAttention(nn.Module):
  """Multi-head attention of `x` (queries) over `memory` (keys/values, fused KV projection)."""
  num_heads: int
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None) -> jax.Array:
    d_model = x.shape[-1]
    head_dim = d_model // self.num_heads
    cfg = self.layer_config
    q = layer_dense(cfg, (self.num_heads, head_dim), "q")(x)
    kv = layer_dense(cfg, (2, self.num_heads, head_dim), "kv")(memory)
    if cfg.fused_attention:
      from xxact_jax.models.kernels import attention  # pylint: disable=g-import-not-at-top
      rate, seed = kernel_dropout(self, cfg)
      out = attention.cross_attention(q, kv, memory_mask, seed, rate, cfg.dropout_bits)
    else:
      out = attend(q, kv[:, :, 0], kv[:, :, 1], memory_mask, dropout(cfg))
    return layer_dense(cfg, d_model, "out", axis=(-2, -1))(out)


class FeedForward(nn.Module):
  """Linear -> ReLU -> dropout -> Linear (PyTorch's transformer feed-forward block)."""
  d_ff: int
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(layer_dense(self.layer_config, self.d_ff, "fc1")(x))
    h = dropout(self.layer_config)(h)
    return layer_dense(self.layer_config, x.shape[-1], "fc2")(h)


class EncoderLayer(nn.Module):
  """Post-LN encoder layer: x = LN(x + SA(x)); x = LN(x + FFN(x))."""
  num_heads: int
  d_ff: int
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    cfg = self.layer_config
    h = SelfAttention(self.num_heads, cfg, name="self_attention")(x, mask)
    x = residual_norm(cfg, "norm1", x, h)
    h = FeedForward(self.d_ff, cfg, name="ffn")(x)
    return residual_norm(cfg, "norm2", x, h)


class DecoderLayer(nn.Module):
  """Post-LN decoder layer: self-attention, cross-attention over `memory`, feed-forward."""
  num_heads: int
  d_ff: int
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None,
               mask: jax.Array | None = None) -> jax.Array:
    cfg = self.layer_config
    h = SelfAttention(self.num_heads, cfg, name="self_attention")(x, mask)
    x = residual_norm(cfg, "norm1", x, h)
    h = CrossAttention(self.num_heads, cfg, name="cross_attention")(x, memory, memory_mask)
    x = residual_norm(cfg, "norm2", x, h)
    h = FeedForward(self.d_ff, cfg, name="ffn")(x)
    return residual_norm(cfg, "norm3", x, h)


def maybe_remat(layer_cls: type[nn.Module], remat: bool) -> type[nn.Module]:
  """Rematerialises a layer in the backward pass when `remat` (trades FLOPs for memory)."""
  return nn.remat(layer_cls) if remat else layer_cls


class TransformerEncoder(nn.Module):
  """A stack of post-LN encoder layers (no final norm, as nn.TransformerEncoder's default)."""
  num_layers: int
  num_heads: int
  d_ff: int
  layer_config: LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    layer_cls = maybe_remat(EncoderLayer, self.layer_config.remat)
    for i in range(self.num_layers):
      x = layer_cls(self.num_heads, self.d_ff, self.layer_config, name=f"layer_{i}")(x, mask)
    return x
