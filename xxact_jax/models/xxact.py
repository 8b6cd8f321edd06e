"""XxaCT-NN: CrabNet composition encoder + XRD transformer + cross-attention fusion + heads."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax.models import composition_encoder
from xxact_jax.models import dtypes
from xxact_jax.models import fusion
from xxact_jax.models import heads
from xxact_jax.models import layers
from xxact_jax.models import validation
from xxact_jax.models import xrd_encoder


class XxaCT(nn.Module):
  """The bimodal model of the paper (Fig. 1)."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array,
               xrd_mask: jax.Array | None = None, train: bool = False) -> dict[str, jax.Array]:
    validation.check_inputs(species, fractions, xrd, xrd_mask)
    cfg = self.config
    dtype = dtypes.compute_dtype(cfg.dtype)
    common = dict(dropout=cfg.dropout, dtype=dtype, remat=cfg.remat, deterministic=not train,
                  kernels=layers.kernels_from_config(cfg))
    # Both encoders project to the fusion width; CLIP-style, the contrastive pair lives there.
    comp, comp_mask = composition_encoder.CompositionEncoder(
        cfg.composition, output_dim=cfg.fusion.d_model, name="composition_encoder",
        **common)(species, fractions)
    xrd_seq = xrd_encoder.XRDEncoder(
        cfg.xrd, cfg.xrd_scale, output_dim=cfg.fusion.d_model, xrd_intensity=cfg.xrd_intensity,
        name="xrd_encoder",
        **common)(xrd, xrd_mask)
    fused = fusion.FusionDecoder(cfg.fusion, name="fusion", **common)(xrd_seq, comp, comp_mask)
    readout = cfg.readout
    if readout == "fused_cls":                      # the paper: heads on the fused [CLS] only
      head_input = fused[:, 0]
    elif readout == "fused_and_composition_cls":    # the composition [CLS] beside it
      head_input = jnp.concatenate([fused[:, 0], comp[:, 0]], axis=-1)
    else:
      raise ValueError(f"Unknown readout {readout!r} (fused_cls | fused_and_composition_cls)")
    out = heads.Heads(tuple(cfg.targets), cfg.mxm, cfg.contrastive, dtype,
                      log_std=cfg.regression_log_std,
                      hidden=tuple(cfg.head_hidden), name="heads")(
        head_input, fused[:, 1:])
    out["comp_cls"] = comp[:, 0].astype(jnp.float32)
    out["xrd_cls"] = xrd_seq[:, 0].astype(jnp.float32)
    out["embedding"] = fused[:, 0].astype(jnp.float32)
    return out
