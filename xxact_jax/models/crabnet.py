"""CrabNet as a standalone predictor: composition encoder + per-element residual output network."""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax import constants
from xxact_jax.models import composition_encoder
from xxact_jax.models import dtypes
from xxact_jax.models import heads
from xxact_jax.models import layers
from xxact_jax.models import validation


class ResidualNetwork(nn.Module):
  """Roost/CrabNet output network: h = LeakyReLU(W h) + R h per hidden layer, then a linear out.

  R is the identity when widths match, else a bias-free linear map.
  """
  hidden: Sequence[int]
  output_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden):
      h = nn.leaky_relu(layers.dense_general(width, f"fc_{i}", self.dtype)(x))
      if x.shape[-1] == width:
        residual = x
      else:
        residual = nn.DenseGeneral(width, use_bias=False, dtype=self.dtype,
                                   param_dtype=jnp.float32, name=f"residual_{i}")(x)
      x = h + residual
    return layers.dense_general(self.output_dim, "fc_out", self.dtype)(x)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x [B, K, C] over the K slots where mask [B, K] is True, in float32."""
  x = x.astype(jnp.float32)
  weights = mask.astype(jnp.float32)[..., None]
  return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


class CrabNet(nn.Module):
  """Composition-only baseline.

  Each target has its own residual network applied to every element token, averaged over the
  real elements. A regression target's network outputs (value, log_std, gate logit); as in CrabNet,
  the value is multiplied by sigmoid(gate) and log_std feeds the RobustL1 loss.
  """
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array | None = None,
               xrd_mask: jax.Array | None = None, train: bool = False) -> dict[str, jax.Array]:
    del xrd, xrd_mask  # Composition only; accepted so every model shares one signature.
    validation.check_inputs(species, fractions, None, needs_xrd=False)
    if self.config.mxm or self.config.contrastive:
      raise ValueError("The CrabNet baseline has no XRD input: model_config.mxm and "
                       "model_config.contrastive must be False")
    cfg = self.config
    dtype = dtypes.compute_dtype(cfg.dtype)
    tokens, mask = composition_encoder.CompositionEncoder(
        cfg.composition, cfg.dropout, dtype, cfg.remat, not train, use_cls=False,
        kernels=layers.kernels_from_config(cfg),
        name="composition_encoder")(species, fractions)
    out = _CrabNetHeads(tuple(cfg.targets), tuple(cfg.crabnet_hidden), dtype, name="heads")(
        tokens, mask)
    out["embedding"] = masked_mean(tokens, mask)
    return out


class _CrabNetHeads(nn.Module):
  targets: Sequence[str]
  hidden: Sequence[int]
  dtype: Any

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    out = {}
    for target in self.targets:
      regression = target in constants.REGRESSION_TARGETS
      width = 3 if regression else heads.target_width(target)
      y = masked_mean(ResidualNetwork(self.hidden, width, self.dtype, name=target)(tokens), mask)
      if regression:
        out[target] = y[:, 0] * jax.nn.sigmoid(y[:, 2])
        out[target + "_log_std"] = y[:, 1]
      else:
        out[target] = y
    return out


def robust_l1(prediction: jax.Array, log_std: jax.Array, target: jax.Array,
              valid: jax.Array | None = None) -> jax.Array:
  """CrabNet's RobustL1: mean of sqrt(2) |y - t| exp(-log_std) + log_std over valid entries.

  Args:
    prediction, log_std, target: float [B].
    valid: optional bool [B]; defaults to the entries where target is not NaN.
  """
  if valid is None:
    valid = ~jnp.isnan(target)
  target = jnp.where(valid, target, 0.0)
  loss = jnp.where(valid, robust_l1_per_example(prediction, log_std, target), 0.0)
  return loss.sum() / jnp.maximum(valid.sum(), 1)


def robust_l1_per_example(prediction: jax.Array, log_std: jax.Array,
                          target: jax.Array) -> jax.Array:
  """sqrt(2) |y - t| exp(-log_std) + log_std: the Laplace negative log-likelihood up to a constant."""
  return math.sqrt(2.0) * jnp.abs(prediction - target) * jnp.exp(-log_std) + log_std
