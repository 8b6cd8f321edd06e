"""XRD transformer encoder: 4250 intensities -> 17 tokens of 250 -> [CLS] + 17 embeddings."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax import constants
from xxact_jax.models import layers


XRD_INTENSITIES = ("linear", "sqrt")


def xrd_input(xrd: jax.Array, xrd_scale: float, intensity: str = "linear") -> jax.Array:
  """float32, the shape of `xrd`: the pattern (max 100) in the model's input units.

  "linear" multiplies by `xrd_scale`; "sqrt" then takes a signed square root, which compresses
  relative intensities (texture, counting statistics) so that weak reflections weigh more, while
  the unmeasured marker (`constants.UNMEASURED_INTENSITY` × scale = -1 at scale 0.01) keeps its
  value.
  """
  x = xrd.astype(jnp.float32) * xrd_scale
  if intensity == "linear":
    return x
  if intensity == "sqrt":
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))
  raise ValueError(f"Unknown model.xrd_intensity {intensity!r}; known: {list(XRD_INTENSITIES)}")


def xrd_tokens(xrd: jax.Array, xrd_scale: float, intensity: str = "linear") -> jax.Array:
  """float32 [B, 17, 250]: the pattern in input units split into tokens (also the MXM target)."""
  tokens = xrd.reshape(xrd.shape[0], constants.XRD_NUM_TOKENS, constants.XRD_TOKEN_SIZE)
  return xrd_input(tokens, xrd_scale, intensity)


class XRDEncoder(nn.Module):
  """Transformer over XRD tokens with a learnable [CLS] and learnable positional embeddings.

  Attributes:
    config: the `xrd` part of the model config (d_model, num_layers, num_heads, d_ff).
    xrd_scale: multiplies the raw intensities (max 100) before the input projection.
    xrd_intensity: "linear" or "sqrt" (`xrd_input`).
    dropout: dropout rate.
    dtype: compute dtype.
    remat: rematerialise each transformer layer.
    deterministic: disables dropout.
    output_dim: if set, the tokens are projected to this width (the fusion width in XxaCT-NN).
    kernels: how attention and dropout are computed.
  """
  config: ml_collections.ConfigDict
  xrd_scale: float
  dropout: float
  dtype: Any
  remat: bool
  deterministic: bool
  output_dim: int | None = None
  xrd_intensity: str = "linear"
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, xrd: jax.Array, xrd_mask: jax.Array | None = None) -> jax.Array:
    """Returns [B, 18, D]: the [CLS] embedding first, then one per XRD token.

    Args:
      xrd: [B, 4250] pattern.
      xrd_mask: optional bool [B, 17]; True tokens are replaced by the learned [MASK] token.
    """
    cfg = self.config
    tokens = xrd_tokens(xrd, self.xrd_scale, self.xrd_intensity).astype(self.dtype)
    # Created even when unused so that pretrained and fine-tuned parameter trees match.
    mask_token = self.param("mask_token", nn.initializers.normal(0.02),
                            (constants.XRD_TOKEN_SIZE,), jnp.float32)
    if xrd_mask is not None:
      tokens = jnp.where(xrd_mask[..., None], mask_token.astype(self.dtype), tokens)
    x = layers.dense_general(cfg.d_model, "input_projection", self.dtype)(tokens)
    cls = self.param("cls", nn.initializers.normal(0.02), (cfg.d_model,), jnp.float32)
    cls = jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, cfg.d_model))
    x = jnp.concatenate([cls, x], axis=1)
    positions = self.param("positional_embedding", nn.initializers.normal(0.02),
                           (constants.XRD_NUM_TOKENS + 1, cfg.d_model), jnp.float32)
    x = x + positions.astype(self.dtype)
    x = layers.TransformerEncoder(cfg.num_layers, cfg.num_heads, cfg.d_ff, self.dropout,
                                  self.dtype, self.remat, self.deterministic,
                                  self.kernels, name="transformer")(x, None)
    if self.output_dim is not None:
      x = layers.dense_general(self.output_dim, "output_projection", self.dtype)(x)
    return x
