"""`build_model(model_config)`: the Flax module for a model config."""

import flax.linen as nn
import ml_collections

from xxact_jax.models import config as config_lib
from xxact_jax.models import crabnet
from xxact_jax.models import heads
from xxact_jax.models import pxrd_fcn
from xxact_jax.models import xrd_transformer
from xxact_jax.models import xxact


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """Returns the module; call it as model.apply(variables, species, fractions, xrd, ...)."""
  name = model_config.name
  for target in model_config.targets:
    heads.target_width(target)  # Unknown targets fail here, before any tracing.
  if name == "xxact":
    return xxact.XxaCT(model_config)
  if name == "crabnet":
    return crabnet.CrabNet(model_config)
  if name == "xrd_transformer":
    return xrd_transformer.XRDTransformer(model_config)
  if name in ("pxrd_fcn", "pxrd_fcn_mlp"):
    return pxrd_fcn.PXRDFCN(model_config, with_composition=name == "pxrd_fcn_mlp")
  raise ValueError(f"Unknown model_config.name {name!r}; known: {list(config_lib.MODEL_NAMES)}")
