"""PXRDPIAYN baselines (Lee et al. 2022), adapted to 4250-point patterns: FCN and FCN+MLP.

The FCN stacks conv-LeakyReLU-maxpool-dropout blocks that halve the pattern until a few positions
remain, then one convolution spanning what is left gives the feature vector; the heads map it to
per-class (or per-target) outputs. FCN+MLP concatenates those features with an MLP over the
composition written as a fraction vector over the 118 elements, followed by a fusion MLP.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax import constants
from xxact_jax.models import dtypes
from xxact_jax.models import heads
from xxact_jax.models import layers
from xxact_jax.models import validation
from xxact_jax.models import xrd_encoder


def fraction_vector(species: jax.Array, fractions: jax.Array) -> jax.Array:
  """float32 [B, 118]: the fraction of each element (padding slots, id 0, are dropped)."""
  one_hot = jax.nn.one_hot(species - 1, constants.NUM_ELEMENTS, dtype=jnp.float32)
  return jnp.einsum("bke,bk->be", one_hot, fractions.astype(jnp.float32))


class FCN(nn.Module):
  """The fully convolutional XRD network; returns features [B, features]."""
  channels: Sequence[int]
  kernel_size: int
  features: int
  xrd_scale: float
  dropout: float
  dtype: Any
  deterministic: bool
  kernels: layers.Kernels = layers.Kernels()
  xrd_intensity: str = "linear"

  @nn.compact
  def __call__(self, xrd: jax.Array) -> jax.Array:
    x = xrd_encoder.xrd_input(xrd, self.xrd_scale, self.xrd_intensity).astype(self.dtype)[..., None]
    for i, width in enumerate(self.channels):
      x = nn.Conv(width, (self.kernel_size,), padding="SAME", dtype=self.dtype,
                  param_dtype=jnp.float32, name=f"conv_{i}")(x)
      x = nn.max_pool(nn.leaky_relu(x), (2,), strides=(2,), padding="VALID")
      x = layers.dropout(self.dropout, self.deterministic, self.kernels)(x)
    if x.shape[1] < 1:
      raise ValueError(f"FCN: {len(self.channels)} pooling blocks leave no positions of a "
                       f"{xrd.shape[1]}-point pattern; use fewer fcn.channels")
    # One convolution over all remaining positions -> a single position of `features` channels.
    x = nn.Conv(self.features, (x.shape[1],), padding="VALID", dtype=self.dtype,
                param_dtype=jnp.float32, name="conv_final")(x)
    return nn.leaky_relu(x[:, 0])


class MLP(nn.Module):
  """Dense-LeakyReLU-dropout blocks."""
  hidden: Sequence[int]
  dropout: float
  dtype: Any
  deterministic: bool
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = nn.leaky_relu(layers.dense_general(width, f"fc_{i}", self.dtype)(x))
      x = layers.dropout(self.dropout, self.deterministic, self.kernels)(x)
    return x


class PXRDFCN(nn.Module):
  """FCN (XRD only) or, with `with_composition`, FCN+MLP (XRD + composition)."""
  config: ml_collections.ConfigDict
  with_composition: bool

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array, xrd: jax.Array,
               xrd_mask: jax.Array | None = None, train: bool = False) -> dict[str, jax.Array]:
    validation.check_inputs(species, fractions, xrd, None,
                            needs_composition=self.with_composition)
    cfg = self.config
    if xrd_mask is not None or cfg.mxm or cfg.contrastive:
      raise ValueError(f"{cfg.name}: the PXRDPIAYN baselines support neither XRD masking (MXM) "
                       "nor contrastive pretraining")
    dtype = dtypes.compute_dtype(cfg.dtype)
    deterministic = not train
    kernels = layers.kernels_from_config(cfg)
    fcn = cfg.fcn
    x = FCN(tuple(fcn.channels), fcn.kernel_size, fcn.features, cfg.xrd_scale, cfg.dropout,
            dtype, deterministic, kernels, cfg.xrd_intensity, name="xrd_encoder")(xrd)
    if self.with_composition:
      comp = MLP(tuple(fcn.composition_hidden), cfg.dropout, dtype, deterministic, kernels,
                 name="composition_encoder")(fraction_vector(species, fractions).astype(dtype))
      x = MLP(tuple(fcn.fusion_hidden), cfg.dropout, dtype, deterministic, kernels,
              name="fusion")(jnp.concatenate([x, comp], axis=-1))
    out = heads.Heads(tuple(cfg.targets), False, False, dtype,
                      log_std=cfg.regression_log_std,
                      hidden=tuple(cfg.head_hidden), name="heads")(x)
    out["embedding"] = x.astype(jnp.float32)
    return out
