"""Resolution of the configured compute dtype."""

import jax
import jax.numpy as jnp

_NAMED = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
  """Maps a config dtype name to a jnp dtype; "auto" is bfloat16 on GPU/TPU, float32 on CPU."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in _NAMED:
    raise ValueError(f"model_config.dtype must be one of {['auto', *_NAMED]}, got {name!r}")
  return _NAMED[name]
