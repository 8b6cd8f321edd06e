"""Cross-attention fusion: a post-LN transformer decoder, XRD tokens attending to composition."""

from typing import Any

import flax.linen as nn
import jax
import ml_collections

from xxact_jax.models import layers


class FusionDecoder(nn.Module):
  """XRD tokens are the queries (and the self-attended sequence); composition tokens the memory.

  Attributes:
    config: the `fusion` part of the model config (d_model, num_layers, num_heads, d_ff).
    dropout: dropout rate.
    dtype: compute dtype.
    remat: rematerialise each decoder layer.
    deterministic: disables dropout.
    kernels: how attention and dropout are computed.
  """
  config: ml_collections.ConfigDict
  dropout: float
  dtype: Any
  remat: bool
  deterministic: bool
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, xrd_tokens: jax.Array, composition_tokens: jax.Array,
               composition_mask: jax.Array) -> jax.Array:
    """Returns the fused XRD sequence [B, 18, d_model]; index 0 is the fused [CLS]."""
    cfg = self.config
    for name, tokens in (("xrd_tokens", xrd_tokens), ("composition_tokens", composition_tokens)):
      if tokens.shape[-1] != cfg.d_model:
        raise ValueError(f"FusionDecoder: {name} have width {tokens.shape[-1]}, expected the "
                         f"fusion d_model {cfg.d_model}")
    layer_cls = layers.maybe_remat(layers.DecoderLayer, self.remat)
    x = xrd_tokens
    for i in range(cfg.num_layers):
      x = layer_cls(cfg.num_heads, cfg.d_ff, self.dropout, self.dtype, self.deterministic,
                    self.kernels, name=f"layer_{i}")(x, composition_tokens, composition_mask)
    return x
