"""The baselines: CrabNet (composition only), the XRD transformer (XRD only) and the PXRDPIAYN
FCN (XRD only) and FCN+MLP (XRD + composition) of Lee et al. 2022.

Each model declares the inputs it reads (`uses_composition`, `uses_xrd`) and its embedding
outputs (`embeddings`: key -> what it is), as XxaCT-NN does; every model takes the same
arguments, an unused input is ignored.
"""

import math
from typing import ClassVar, Sequence, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.models import encoders
from xxact_jax.models import heads
from xxact_jax.models import layers

if TYPE_CHECKING:   # config.py imports this module
  from xxact_jax.models import config as config_lib


# CrabNet.

class ResidualNetwork(nn.Module):
  """Roost/CrabNet output network: h = LeakyReLU(W h) + R h per hidden layer, then a linear out.

  R is the identity when widths match, else a bias-free linear map.
  """
  hidden: Sequence[int]
  output_dim: int
  layer_config: layers.LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.layer_config.dtype
    for i, width in enumerate(self.hidden):
      h = nn.leaky_relu(layers.dense_general(width, f"fc_{i}", dtype)(x))
      if x.shape[-1] == width:
        residual = x
      else:
        residual = nn.DenseGeneral(width, use_bias=False, dtype=dtype,
                                   param_dtype=jnp.float32, name=f"residual_{i}")(x)
      x = h + residual
    return layers.dense_general(self.output_dim, "fc_out", dtype)(x)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x [B, K, C] over the K slots where mask [B, K] is True, in float32."""
  x = x.astype(jnp.float32)
  weights = mask.astype(jnp.float32)[..., None]
  return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


class _CrabNetHeads(nn.Module):
  targets: Sequence[str]
  hidden: Sequence[int]
  layer_config: layers.LayerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    out = {}
    for target in self.targets:
      regression = target in constants.REGRESSION_TARGETS
      width = 3 if regression else targets_lib.get(target).head_width
      y = masked_mean(ResidualNetwork(self.hidden, width, self.layer_config, name=target)(tokens),
                      mask)
      if regression:
        out[target] = y[:, 0] * jax.nn.sigmoid(y[:, 2])
        out[target + "_log_std"] = y[:, 1]
      else:
        out[target] = y
    return out


class CrabNet(nn.Module):
  """Composition-only baseline.

  Each target has its own residual network applied to every element token, averaged over the
  real elements. A regression target's network outputs (value, log_std, gate logit); as in CrabNet,
  the value is multiplied by sigmoid(gate) and log_std feeds the RobustL1 loss.
  """
  config: "config_lib.ModelConfig"

  uses_composition: ClassVar[bool] = True
  uses_xrd: ClassVar[bool] = False
  embeddings: ClassVar[dict[str, str]] = {"embedding": "CrabNet pooled composition"}

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array | None = None,
               xrd_mask: jax.Array | None = None, train: bool = False,
               measured: jax.Array | None = None) -> dict[str, jax.Array]:
    # Composition only; the XRD arguments are accepted so every model shares one signature.
    del xrd, xrd_mask, measured
    encoders.check_inputs(species, fractions, None, needs_xrd=False)
    cfg = self.config
    if cfg.mxm or cfg.contrastive:
      raise ValueError("The CrabNet baseline has no XRD input: model_config.mxm and "
                       "model_config.contrastive must be False")
    layer_config = layers.LayerConfig.from_model_config(cfg, train)
    tokens, mask = encoders.CompositionEncoder(
        cfg.composition, layer_config, use_cls=False,
        name="composition_encoder")(species, fractions)
    out = _CrabNetHeads(cfg.targets, cfg.crabnet_hidden, layer_config, name="heads")(
        tokens, mask)
    out["embedding"] = masked_mean(tokens, mask)
    return out


def robust_l1(prediction: jax.Array, log_std: jax.Array, target: jax.Array,
              valid: jax.Array | None = None) -> jax.Array:
  """CrabNet's RobustL1: mean of sqrt(2) |y - t| exp(-log_std) + log_std over valid entries.

  All float [B]; `valid` (bool [B]) defaults to the entries where target is not NaN.
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


# The XRD transformer.

class XRDTransformer(nn.Module):
  """XRD encoder + heads on its [CLS] (and MXM on its XRD tokens when configured)."""
  config: "config_lib.ModelConfig"

  uses_composition: ClassVar[bool] = False
  uses_xrd: ClassVar[bool] = True
  embeddings: ClassVar[dict[str, str]] = {"embedding": "XRD [CLS]"}

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array,
               xrd_mask: jax.Array | None = None, train: bool = False,
               measured: jax.Array | None = None) -> dict[str, jax.Array]:
    del species, fractions  # XRD only; accepted so every model shares one signature.
    encoders.check_inputs(None, None, xrd, xrd_mask, needs_composition=False)
    cfg = self.config
    layer_config = layers.LayerConfig.from_model_config(cfg, train)
    seq, _ = encoders.XRDEncoder(cfg, layer_config, name="xrd_encoder")(xrd, xrd_mask, measured)
    out = heads.Heads(cfg.targets, cfg.mxm, False, layer_config,
                      log_std=cfg.regression_log_std, hidden=cfg.head_hidden,
                      mxm_activation=cfg.mxm_activation, name="heads")(seq[:, 0], seq[:, 1:])
    out["embedding"] = seq[:, 0].astype(jnp.float32)
    return out


# PXRDPIAYN, adapted to 4250-point patterns. The FCN stacks conv-LeakyReLU-maxpool-dropout blocks
# that halve the pattern until a few positions remain, then one convolution spanning what is left
# gives the feature vector. FCN+MLP concatenates those features with an MLP over the composition
# written as a fraction vector over the 118 elements, followed by a fusion MLP.

def fraction_vector(species: jax.Array, fractions: jax.Array) -> jax.Array:
  """float32 [B, 118]: the fraction of each element (padding slots, id 0, are dropped)."""
  one_hot = jax.nn.one_hot(species - 1, constants.NUM_ELEMENTS, dtype=jnp.float32)
  return jnp.einsum("bke,bk->be", one_hot, fractions.astype(jnp.float32))


class FCN(nn.Module):
  """The fully convolutional XRD network (`config.fcn`); returns features [B, fcn.features]."""
  config: "config_lib.ModelConfig"
  layer_config: layers.LayerConfig

  @nn.compact
  def __call__(self, xrd: jax.Array) -> jax.Array:
    dtype = self.layer_config.dtype
    fcn = self.config.fcn
    x = encoders.xrd_input(xrd, self.config.xrd_scale,
                           self.config.xrd_intensity).astype(dtype)[..., None]
    for i, width in enumerate(fcn.channels):
      x = nn.Conv(width, (fcn.kernel_size,), padding="SAME", dtype=dtype,
                  param_dtype=jnp.float32, name=f"conv_{i}")(x)
      x = nn.max_pool(nn.leaky_relu(x), (2,), strides=(2,), padding="VALID")
      x = layers.dropout(self.layer_config)(x)
    if x.shape[1] < 1:
      raise ValueError(f"FCN: {len(fcn.channels)} pooling blocks leave no positions of a "
                       f"{xrd.shape[1]}-point pattern; use fewer fcn.channels")
    # One convolution over all remaining positions -> a single position of `features` channels.
    x = nn.Conv(fcn.features, (x.shape[1],), padding="VALID", dtype=dtype,
                param_dtype=jnp.float32, name="conv_final")(x)
    return nn.leaky_relu(x[:, 0])


class MLP(nn.Module):
  """Dense-LeakyReLU-dropout blocks."""
  hidden: Sequence[int]
  layer_config: layers.LayerConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = nn.leaky_relu(layers.dense_general(width, f"fc_{i}", self.layer_config.dtype)(x))
      x = layers.dropout(self.layer_config)(x)
    return x


class PXRDFCN(nn.Module):
  """The FCN on the pattern alone; `PXRDFCNMLP` adds the composition."""
  config: "config_lib.ModelConfig"

  uses_composition: ClassVar[bool] = False
  uses_xrd: ClassVar[bool] = True
  embeddings: ClassVar[dict[str, str]] = {"embedding": "FCN feature"}

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array,
               xrd_mask: jax.Array | None = None, train: bool = False,
               measured: jax.Array | None = None) -> dict[str, jax.Array]:
    encoders.check_inputs(species, fractions, xrd, None,
                          needs_composition=self.uses_composition)
    cfg = self.config
    if cfg.xrd_measurement_embedding:
      raise ValueError(f"{cfg.name}: model.xrd_measurement_embedding needs a transformer XRD "
                       "encoder (xxact, xrd_transformer)")
    del measured
    if xrd_mask is not None or cfg.mxm or cfg.contrastive:
      raise ValueError(f"{cfg.name}: the PXRDPIAYN baselines support neither XRD masking (MXM) "
                       "nor contrastive pretraining")
    layer_config = layers.LayerConfig.from_model_config(cfg, train)
    x = FCN(cfg, layer_config, name="xrd_encoder")(xrd)
    if self.uses_composition:
      comp = MLP(cfg.fcn.composition_hidden, layer_config, name="composition_encoder")(
          fraction_vector(species, fractions).astype(layer_config.dtype))
      x = MLP(cfg.fcn.fusion_hidden, layer_config, name="fusion")(
          jnp.concatenate([x, comp], axis=-1))
    out = heads.Heads(cfg.targets, False, False, layer_config,
                      log_std=cfg.regression_log_std, hidden=cfg.head_hidden, name="heads")(x)
    out["embedding"] = x.astype(jnp.float32)
    return out


class PXRDFCNMLP(PXRDFCN):
  """FCN+MLP: the FCN's features beside an MLP over the composition, then a fusion MLP."""
  uses_composition: ClassVar[bool] = True
  embeddings: ClassVar[dict[str, str]] = {"embedding": "FCN + MLP feature"}
