"""XxaCT-NN (the paper's Fig. 1): composition and XRD encoders, cross-attention fusion, heads."""

from typing import ClassVar, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from xxact_jax.models import encoders
from xxact_jax.models import heads
from xxact_jax.models import layers

if TYPE_CHECKING:   # config.py imports this module
  from xxact_jax.models import config as config_lib


class FusionDecoder(nn.Module):
  """Post-LN transformer decoder fusing the modalities.

  XRD tokens are the queries (and the self-attended sequence); composition tokens the memory.

  `config` holds the fusion transformer's sizes.
  """
  config: "config_lib.TransformerConfig"
  layer_config: layers.LayerConfig

  @nn.compact
  def __call__(self, xrd_tokens: jax.Array, composition_tokens: jax.Array,
               composition_mask: jax.Array, xrd_token_mask: jax.Array | None = None) -> jax.Array:
    """Returns the fused XRD sequence [B, 1 + T, d_model]; index 0 is the fused [CLS].

    `xrd_token_mask` (bool [B, 1 + T], None: all real) keeps absent XRD tokens (peaks a pattern
    does not have) out of the self-attention's keys.
    """
    cfg = self.config
    for name, tokens in (("xrd_tokens", xrd_tokens), ("composition_tokens", composition_tokens)):
      if tokens.shape[-1] != cfg.d_model:
        raise ValueError(f"FusionDecoder: {name} have width {tokens.shape[-1]}, expected the "
                         f"fusion d_model {cfg.d_model}")
    layer_cls = layers.maybe_remat(layers.DecoderLayer, self.layer_config.remat)
    x = xrd_tokens
    for i in range(cfg.num_layers):
      x = layer_cls(cfg.num_heads, cfg.d_ff, self.layer_config, name=f"layer_{i}")(
          x, composition_tokens, composition_mask, xrd_token_mask)
    return x


class XxaCT(nn.Module):
  """The bimodal model of the paper."""
  config: "config_lib.ModelConfig"

  # The inputs it reads, and its embedding outputs (key: what it is), "embedding" first.
  uses_composition: ClassVar[bool] = True
  uses_xrd: ClassVar[bool] = True
  embeddings: ClassVar[dict[str, str]] = {
      "embedding": "fused [CLS]", "comp_cls": "composition [CLS]", "xrd_cls": "XRD [CLS]"}

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array,
               xrd_mask: jax.Array | None = None, train: bool = False,
               measured: jax.Array | None = None) -> dict[str, jax.Array]:
    encoders.check_inputs(species, fractions, xrd, xrd_mask)
    cfg = self.config
    layer_config = layers.LayerConfig.from_model_config(cfg, train)
    # Both encoders project to the fusion width; CLIP-style, the contrastive pair lives there.
    comp, comp_mask = encoders.CompositionEncoder(
        cfg.composition, layer_config, output_dim=cfg.fusion.d_model,
        name="composition_encoder")(species, fractions)
    xrd_seq, xrd_token_mask = encoders.XRDEncoder(
        cfg, layer_config, output_dim=cfg.fusion.d_model, name="xrd_encoder")(
            xrd, xrd_mask, measured)
    fused = FusionDecoder(cfg.fusion, layer_config, name="fusion")(xrd_seq, comp, comp_mask,
                                                                   xrd_token_mask)
    head_input = fused[:, 0]                # the paper: heads on the fused [CLS] only
    if cfg.readout == "fused_and_composition_cls":    # the composition [CLS] beside it
      head_input = jnp.concatenate([head_input, comp[:, 0]], axis=-1)
    out = heads.Heads(cfg.targets, cfg.mxm, cfg.contrastive, layer_config,
                      log_std=cfg.regression_log_std, hidden=cfg.head_hidden,
                      mxm_activation=cfg.mxm_activation, name="heads")(head_input, fused[:, 1:])
    out["comp_cls"] = comp[:, 0].astype(jnp.float32)
    out["xrd_cls"] = xrd_seq[:, 0].astype(jnp.float32)
    out["embedding"] = fused[:, 0].astype(jnp.float32)
    return out
