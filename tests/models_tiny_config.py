"""A small experiment config for the models CLI test: `.model` is a tiny XxaCT-NN."""

from xxact_jax.models import model_config


def get_config(arg=None):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict()
  config.model = model_config(arg or "xxact", size="tiny")
  config.model.dtype = "float32"
  return config
