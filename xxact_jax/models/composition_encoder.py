"""CrabNet composition encoder: mat2vec element embeddings + fractional encodings + transformer."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax.models import element_embeddings
from xxact_jax.models import layers


class CompositionEncoder(nn.Module):
  """Encodes (species, fractions) into a token sequence.

  Attributes:
    config: the `composition` part of the model config (d_model, num_layers, num_heads, d_ff,
      resolution).
    dropout: dropout rate.
    dtype: compute dtype.
    remat: rematerialise each transformer layer.
    deterministic: disables dropout.
    use_cls: prepend a learnable [CLS] token (the paper's encoder); CrabNet alone has none.
    output_dim: if set, the tokens are projected to this width (the fusion width in XxaCT-NN).
    kernels: how attention and dropout are computed.
  """
  config: ml_collections.ConfigDict
  dropout: float
  dtype: Any
  remat: bool
  deterministic: bool
  use_cls: bool = True
  output_dim: int | None = None
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (tokens [B, T, D], mask bool [B, T]); T = K (+1 with [CLS] first)."""
    cfg = self.config
    d_model = cfg.d_model
    table = jnp.asarray(element_embeddings.mat2vec_table(), self.dtype)
    x = layers.dense_general(d_model, "element_projection", self.dtype)(table[species])
    emb_scale = self.param("emb_scaler", nn.initializers.ones, (), jnp.float32)
    pos_scale = self.param("pos_scaler", nn.initializers.ones, (), jnp.float32)
    pos_scale_log = self.param("pos_scaler_log", nn.initializers.ones, (), jnp.float32)
    half = d_model // 2
    frac_enc = element_embeddings.fractional_encoding(fractions, half, cfg.resolution, False)
    log_enc = element_embeddings.fractional_encoding(fractions, d_model - half, cfg.resolution,
                                                     True)
    # CrabNet: x * 2^s_emb + [pe * 2^((1 - s_pe)^2), ple * 2^((1 - s_ple)^2)].
    encoding = jnp.concatenate([frac_enc * 2.0 ** ((1.0 - pos_scale) ** 2),
                                log_enc * 2.0 ** ((1.0 - pos_scale_log) ** 2)], axis=-1)
    x = x * (2.0 ** emb_scale).astype(self.dtype) + encoding.astype(self.dtype)
    mask = species > 0
    if self.use_cls:
      cls = self.param("cls", nn.initializers.normal(0.02), (d_model,), jnp.float32)
      cls = jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, d_model))
      x = jnp.concatenate([cls, x], axis=1)
      mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
    x = layers.TransformerEncoder(cfg.num_layers, cfg.num_heads, cfg.d_ff, self.dropout,
                                  self.dtype, self.remat, self.deterministic,
                                  self.kernels, name="transformer")(x, mask)
    # Padded slots carry no information downstream (CrabNet zeroes them too).
    x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
    if self.output_dim is not None:
      x = layers.dense_general(self.output_dim, "output_projection", self.dtype)(x)
    return x, mask
