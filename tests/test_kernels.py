"""Dropout (models/layers.py `LayerConfig.dropout_bits`): narrow random draws, unbiased and
faithful."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import stored_config
from xxact_jax.models import build_model
from xxact_jax.models import layers
from xxact_jax.models import model_config


@pytest.mark.parametrize("bits", [16, 8])
def test_keep_mask_rate_is_the_quantised_keep_probability(bits):
  shape = (256, 18, 77)          # an odd last axis: the draws are cut to length
  mask = np.asarray(layers.keep_mask(jax.random.key(0), shape, 0.9, bits))
  assert mask.shape == shape and mask.dtype == bool
  expected = layers.quantised_keep_threshold(0.9, bits) / 2 ** bits
  n = mask.size
  assert abs(mask.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
  # Every position along the split axis is drawn alike (no stuck byte lanes).
  per_position = mask.reshape(-1, shape[-1]).mean(0)
  assert np.all(np.abs(per_position - expected) < 0.03)
  # Neighbouring draws come from different bytes of a word: they are not copies of each other.
  assert np.mean(mask[..., 0::2][..., :38] == mask[..., 1::2][..., :38]) < 0.9


def test_keep_mask_depends_on_the_key_only():
  a = layers.keep_mask(jax.random.key(1), (8, 33), 0.5, 8)
  b = layers.keep_mask(jax.random.key(1), (8, 33), 0.5, 8)
  c = layers.keep_mask(jax.random.key(2), (8, 33), 0.5, 8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_quantised_threshold_stays_in_range():
  assert layers.quantised_keep_threshold(0.9, 8) == 230
  assert layers.quantised_keep_threshold(0.9, 16) == 58982
  assert layers.quantised_keep_threshold(0.99999, 8) == 256     # keeps everything
  assert layers.quantised_keep_threshold(1e-9, 8) == 1


@pytest.mark.parametrize("bits", [16, 8])
def test_narrow_bits_dropout_is_unbiased_and_off_when_deterministic(bits):
  x = jnp.ones((512, 300), jnp.float32)
  module = layers.NarrowBitsDropout(0.1, deterministic=False, bits=bits)
  y = np.asarray(module.apply({}, x, rngs={"dropout": jax.random.key(3)}))
  kept = y != 0
  # Kept entries are scaled by exactly 1/P(keep), so the mean stays 1.
  scale = 2 ** bits / layers.quantised_keep_threshold(0.9, bits)
  np.testing.assert_allclose(y[kept], scale, rtol=1e-6)
  assert abs(y.mean() - 1.0) < 0.01
  off = layers.NarrowBitsDropout(0.1, deterministic=True, bits=bits).apply({}, x)
  np.testing.assert_array_equal(off, x)


def test_bad_dropout_bits_are_a_clear_error():
  with pytest.raises(ValueError, match="model.dropout_bits"):
    layers.LayerConfig(0.1, jnp.float32, False, False, dropout_bits=4)


def test_default_dropout_keeps_the_papers_rate():
  """The default draws keep with probability 0.9 to 1e-5 (the paper's dropout 0.1)."""
  config = model_config("xxact", "paper")
  bits = layers.LayerConfig.from_model_config(config, train=True).dropout_bits
  kept = layers.quantised_keep_threshold(1 - config.dropout, bits) / 2 ** bits
  assert abs(kept - 0.9) < 1e-5


def test_configs_without_dropout_bits_load_as_flax_dropout():
  config = model_config("xxact", "tiny")
  del config["dropout_bits"]
  config = stored_config.upgrade(config, "model.")   # where a stored config is read
  assert layers.LayerConfig.from_model_config(config, train=True).dropout_bits == 32


def _inputs():
  species = jnp.array([[8, 26, 0, 0], [3, 0, 0, 0], [14, 8, 12, 1]], jnp.int32)
  fractions = jnp.array([[0.6, 0.4, 0, 0], [1.0, 0, 0, 0], [0.4, 0.3, 0.2, 0.1]], jnp.float32)
  xrd = 100 * jax.random.uniform(jax.random.key(7), (3, 4250))
  return species, fractions, xrd


def _model(name, dropout_bits=32):
  c = model_config(name, "tiny")
  c.dtype = "float32"
  c.dropout_bits = dropout_bits
  return build_model(c)


def test_dropout_bits_keep_the_parameter_tree():
  inputs = _inputs()
  trees = [jax.tree.structure(_model("xxact", b).init(jax.random.key(0), *inputs))
           for b in (32, 16, 8)]
  assert trees[0] == trees[1] == trees[2]


@pytest.mark.parametrize("bits", [32, 16])
def test_training_mode_draws_fresh_masks_per_key(bits):
  inputs = _inputs()
  model = _model("xxact", dropout_bits=bits)
  variables = model.init(jax.random.key(0), *inputs)
  run = lambda k: model.apply(variables, *inputs, train=True, rngs={"dropout": jax.random.key(k)})
  a, b, c = run(1), run(1), run(2)
  np.testing.assert_array_equal(a["embedding"], b["embedding"])
  assert not np.allclose(a["embedding"], c["embedding"])


def test_the_dropout_switch_reaches_the_pxrd_baselines():
  inputs = _inputs()
  narrow, wide = _model("pxrd_fcn_mlp", dropout_bits=8), _model("pxrd_fcn_mlp", dropout_bits=32)
  variables = narrow.init(jax.random.key(0), *inputs)
  np.testing.assert_array_equal(narrow.apply(variables, *inputs)["embedding"],
                                wide.apply(variables, *inputs)["embedding"])
  run = lambda m: m.apply(variables, *inputs, train=True, rngs={"dropout": jax.random.key(5)})
  assert not np.allclose(run(narrow)["embedding"], run(wide)["embedding"])
