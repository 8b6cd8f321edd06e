"""The unimodal XRD transformer baseline: heads on the XRD encoder's [CLS]."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax.models import dtypes
from xxact_jax.models import heads
from xxact_jax.models import layers
from xxact_jax.models import validation
from xxact_jax.models import xrd_encoder


class XRDTransformer(nn.Module):
  """XRD encoder + linear heads (and MXM on its XRD tokens when configured)."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array,
               xrd_mask: jax.Array | None = None, train: bool = False) -> dict[str, jax.Array]:
    del species, fractions  # XRD only; accepted so every model shares one signature.
    validation.check_inputs(None, None, xrd, xrd_mask, needs_composition=False)
    cfg = self.config
    dtype = dtypes.compute_dtype(cfg.dtype)
    seq = xrd_encoder.XRDEncoder(cfg.xrd, cfg.xrd_scale, cfg.dropout, dtype, cfg.remat,
                                 not train, kernels=layers.kernels_from_config(cfg),
                                 xrd_intensity=cfg.xrd_intensity, name="xrd_encoder")(xrd, xrd_mask)
    out = heads.Heads(tuple(cfg.targets), cfg.mxm, False, dtype,
                      log_std=cfg.regression_log_std,
                      hidden=tuple(cfg.head_hidden), name="heads")(
        seq[:, 0], seq[:, 1:])
    out["embedding"] = seq[:, 0].astype(jnp.float32)
    return out
