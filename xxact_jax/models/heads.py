"""Prediction heads: one linear layer (or a small MLP) per target, the MXM reconstruction and the
temperature."""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.models import layers

CONTRASTIVE_INIT_TEMPERATURE = 0.07


class Heads(nn.Module):
  """Linear heads on the [CLS] embedding; optional MXM and contrastive parameters.

  Attributes:
    mxm: add mxm_activation(Linear(d -> 250)) on each XRD token (masked XRD modelling).
    contrastive: add the learnable log(1/temperature), initialised to log(1/0.07).
    layer_config: its dtype is the compute dtype (the heads have no dropout).
    log_std: regression targets also output `<target>_log_std` (a second linear layer), the
      predicted log σ that CrabNet's RobustL1 loss needs.
    hidden: widths of ReLU layers before each target's output layer; () is the paper's.
  """
  targets: Sequence[str]
  mxm: bool
  contrastive: bool
  layer_config: layers.LayerConfig
  log_std: bool = False
  hidden: Sequence[int] = ()
  mxm_activation: str = "relu"

  @nn.compact
  def __call__(self, embedding: jax.Array, xrd_tokens: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """Args: embedding [B, D]; xrd_tokens [B, 17, D] (the XRD tokens after [CLS]) for MXM."""
    dtype = self.layer_config.dtype
    out = {}
    for target in self.targets:
      h = embedding
      for i, features in enumerate(self.hidden):
        h = nn.relu(layers.dense_general(features, f"{target}_hidden{i}", dtype)(h))
      # Width 1 for regression, the class count for classification.
      y = layers.dense_general(targets_lib.get(target).head_width, target, dtype)(h).astype(
          jnp.float32)
      regression = targets_lib.get(target).is_regression
      out[target] = y[:, 0] if regression else y
      if self.log_std and regression:
        out[target + "_log_std"] = layers.dense_general(1, target + "_log_std", dtype)(
            h).astype(jnp.float32)[:, 0]
    if self.mxm:
      if xrd_tokens is None:
        raise ValueError("model_config.mxm needs an XRD token sequence (XxaCT or XRD transformer)")
      recon = layers.dense_general(constants.XRD_TOKEN_SIZE, "mxm", dtype)(xrd_tokens)
      activation = {"softplus": nn.softplus, "relu": nn.relu,   # checked by ModelConfig
                    "linear": lambda x: x}[self.mxm_activation]
      out["mxm"] = activation(recon.astype(jnp.float32))
    if self.contrastive:
      out["logit_scale"] = self.param(
          "logit_scale", nn.initializers.constant(math.log(1.0 / CONTRASTIVE_INIT_TEMPERATURE)),
          (), jnp.float32)
    return out
