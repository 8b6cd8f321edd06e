"""Flax models: XxaCT-NN, CrabNet, the XRD transformer and the PXRDPIAYN baselines."""

from xxact_jax.models.builder import build_model
from xxact_jax.models.config import MODEL_NAMES
from xxact_jax.models.config import model_config
from xxact_jax.models.crabnet import robust_l1
from xxact_jax.models.validation import check_inputs
from xxact_jax.models.xrd_encoder import xrd_tokens

__all__ = ["MODEL_NAMES", "build_model", "check_inputs", "model_config", "robust_l1",
           "xrd_tokens"]
