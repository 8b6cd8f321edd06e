"""Flax models: XxaCT-NN, CrabNet, the XRD transformer and the PXRDPIAYN baselines.

layers.py (LayerConfig, dropout, attention, transformer layers), encoders.py (composition and
XRD encoders, input checks), xxact.py (fusion + XxaCT-NN), baselines.py, heads.py, config.py
(model configs, `build_model`), parameter_count.py (parameters and FLOPs; `python -m
xxact_jax.models` prints them).
"""

from xxact_jax.models.baselines import robust_l1
from xxact_jax.models.config import build_model, MODEL_NAMES, model_class, model_config
from xxact_jax.models.encoders import check_inputs, xrd_tokens

__all__ = ["MODEL_NAMES", "build_model", "check_inputs", "model_class", "model_config",
           "robust_l1", "xrd_tokens"]
