"""The alternative attention and dropout kernels (models/layers.py `Kernels`) and PRNGs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_bad_kernel_names_are_clear_errors():
  with pytest.raises(ValueError, match="model.attention"):
    layers.Kernels(attention="flash")
  with pytest.raises(ValueError, match="model.dropout_bits"):
    layers.Kernels(dropout_bits=4)


def _inputs():
  species = jnp.array([[8, 26, 0, 0], [3, 0, 0, 0], [14, 8, 12, 1]], jnp.int32)
  fractions = jnp.array([[0.6, 0.4, 0, 0], [1.0, 0, 0, 0], [0.4, 0.3, 0.2, 0.1]], jnp.float32)
  xrd = 100 * jax.random.uniform(jax.random.key(7), (3, 4250))
  return species, fractions, xrd


def _model(name, attention="einsum", dropout_bits=32):
  c = model_config(name, "tiny")
  c.dtype = "float32"
  c.attention, c.dropout_bits = attention, dropout_bits
  return build_model(c)


@pytest.mark.parametrize("name", ["xxact", "crabnet", "xrd_transformer"])
def test_xla_attention_equals_the_einsum_attention(name):
  """Same parameters, padded composition keys masked: the outputs agree in evaluation mode."""
  inputs = _inputs()
  reference = _model(name)
  variables = reference.init(jax.random.key(0), *inputs)
  fused = _model(name, attention="xla")
  expected = reference.apply(variables, *inputs)
  got = fused.apply(variables, *inputs)
  for key, value in expected.items():
    np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=2e-5, err_msg=key)


def test_kernels_keep_the_parameter_tree():
  inputs = _inputs()
  trees = [jax.tree.structure(_model("xxact", a, b).init(jax.random.key(0), *inputs))
           for a, b in (("einsum", 32), ("xla", 16), ("einsum", 8))]
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


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_train_step_rng_follows_the_configured_prng(impl):
  """The step's keys carry the configured implementation, and the step traces with them."""
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  config = defaults.load_config_file("configs/mxm_contrastive.py", "runlocal")
  assert jax.random.key_impl(step_lib.train_base_key(config)) == jax.random.key_impl(
      jax.random.key(0))
  config.prng_impl = impl
  key = step_lib.train_base_key(config)
  assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl=impl))
  assert jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0))
  model = build_model(config.model)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, 10, config.trainable)
  state = jax.eval_shape(step_lib.make_init_fn(model, tx, 10), jax.random.key(0))
  batch = step_lib.batch_struct(8, 10, config.targets)
  train_step = step_lib.make_train_step(model, tx, schedule, config, {})
  new_state, metrics = jax.eval_shape(train_step, state, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert metrics["loss"].shape == ()


def test_the_dropout_switch_reaches_the_pxrd_baselines():
  inputs = _inputs()
  narrow, wide = _model("pxrd_fcn_mlp", dropout_bits=8), _model("pxrd_fcn_mlp", dropout_bits=32)
  variables = narrow.init(jax.random.key(0), *inputs)
  np.testing.assert_array_equal(narrow.apply(variables, *inputs)["embedding"],
                                wide.apply(variables, *inputs)["embedding"])
  run = lambda m: m.apply(variables, *inputs, train=True, rngs={"dropout": jax.random.key(5)})
  assert not np.allclose(run(narrow)["embedding"], run(wide)["embedding"])
