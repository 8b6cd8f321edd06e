"""Model properties: padding and element-order invariance, XRD masking, bf16 vs float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax.models import build_model
from xxact_jax.models import model_config
from float32_tolerance import assert_close

B, K, EXTRA_PADDING = 4, 5, 3


def random_batch(seed=0):
  """Compositions of 1..K elements, descending fractions, one row with all K slots used."""
  rng = np.random.default_rng(seed)
  species = np.zeros((B, K), np.int32)
  fractions = np.zeros((B, K), np.float32)
  for i in range(B):
    n = K if i == 0 else rng.integers(1, K + 1)
    species[i, :n] = rng.choice(np.arange(1, 95), n, replace=False)
    f = np.sort(rng.random(n))[::-1] + 0.05
    fractions[i, :n] = f / f.sum()
  xrd = (rng.random((B, constants.NUM_XRD_POINTS)) ** 8 * 100).astype(np.float32)
  return species, fractions, xrd


def pad(species, fractions, extra=EXTRA_PADDING):
  return (np.pad(species, ((0, 0), (0, extra))), np.pad(fractions, ((0, 0), (0, extra))))


def permute_elements(species, fractions, seed=1):
  """Shuffles each row's element slots (padding included) together with their fractions."""
  rng = np.random.default_rng(seed)
  species, fractions = species.copy(), fractions.copy()
  for i in range(len(species)):
    order = rng.permutation(species.shape[1])
    species[i], fractions[i] = species[i, order], fractions[i, order]
  return species, fractions


def tiny_config(name, dtype):
  cfg = model_config(name, "tiny")
  cfg.dtype = dtype
  cfg.targets = constants.ALL_TARGETS
  cfg.mxm = name == "xxact"
  cfg.contrastive = name == "xxact"
  return cfg


@functools.lru_cache(maxsize=None)
def tiny_model(name, dtype="float32"):
  """(float32 variables, jitted eval-mode apply) of a tiny model predicting every target.

  Parameters are float32 whatever the compute dtype, so every dtype shares one initialisation.
  """
  model = build_model(tiny_config(name, dtype))
  init_model = build_model(tiny_config(name, "float32"))
  variables = _init(init_model)
  apply = jax.jit(lambda v, s, f, x, m: model.apply(v, s, f, x, xrd_mask=m, train=False))
  return model, variables, apply


_VARIABLES = {}


def _init(model):
  key = model.config.name
  if key not in _VARIABLES:
    _VARIABLES[key] = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *random_batch())
  return _VARIABLES[key]


def assert_outputs_close(a, b):
  assert set(a) == set(b)
  for key in a:
    assert_close(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", ["xxact", "crabnet", "pxrd_fcn_mlp"])
def test_padded_element_slots_change_no_output(name):
  _, variables, apply = tiny_model(name)
  species, fractions, xrd = random_batch()
  reference = apply(variables, species, fractions, xrd, None)
  padded = apply(variables, *pad(species, fractions), xrd, None)
  assert_outputs_close(reference, padded)
  # The check has teeth: a real extra element does change the outputs.
  species_more, fractions_more = pad(species, fractions)
  species_more[:, K] = 26
  fractions_more[:, K] = 0.2
  changed = apply(variables, species_more, fractions_more, xrd, None)
  assert not np.allclose(changed["embedding"], reference["embedding"], atol=1e-4)


@pytest.mark.parametrize("name", ["xxact", "crabnet", "pxrd_fcn_mlp"])
def test_element_order_changes_no_output(name):
  _, variables, apply = tiny_model(name)
  species, fractions, xrd = random_batch()
  reference = apply(variables, species, fractions, xrd, None)
  shuffled = apply(variables, *permute_elements(species, fractions), xrd, None)
  assert_outputs_close(reference, shuffled)
  if name == "xxact":
    assert_close(reference["comp_cls"], shuffled["comp_cls"])
  # Fractions stay attached to their elements: swapping them between elements matters.
  swapped = fractions.copy()
  swapped[0, [0, 1]] = swapped[0, [1, 0]]
  moved = apply(variables, species, swapped, xrd, None)
  assert not np.allclose(moved["embedding"][0], reference["embedding"][0], atol=1e-4)


def test_masked_xrd_tokens_are_replaced_before_the_encoder():
  _, variables, apply = tiny_model("xxact")
  species, fractions, xrd = random_batch()
  mask = np.zeros((B, constants.XRD_NUM_TOKENS), bool)
  mask[:, [2, 9]] = True
  mask[1, 16] = True
  rng = np.random.default_rng(5)
  scrambled = xrd.reshape(B, 17, 250).copy()
  scrambled[mask] = rng.random((mask.sum(), 250)) * 100
  scrambled = scrambled.reshape(B, -1)
  masked = apply(variables, species, fractions, xrd, mask)
  masked_scrambled = apply(variables, species, fractions, scrambled, mask)
  # Whatever the masked tokens held, the model sees only the [MASK] token there.
  assert_outputs_close(masked, masked_scrambled)
  unmasked = apply(variables, species, fractions, xrd, np.zeros_like(mask))
  assert not np.allclose(masked["embedding"], unmasked["embedding"], atol=1e-4)
  assert_outputs_close(unmasked, apply(variables, species, fractions, xrd, None))
  # Unmasked positions still matter while masking is on.
  visible = scrambled.reshape(B, 17, 250).copy()
  visible[:, 0] += 50.0
  shifted = apply(variables, species, fractions, visible.reshape(B, -1), mask)
  assert not np.allclose(shifted["embedding"], masked_scrambled["embedding"], atol=1e-4)


def test_bfloat16_forward_agrees_with_float32():
  _, variables, apply32 = tiny_model("xxact", "float32")
  _, _, apply16 = tiny_model("xxact", "bfloat16")
  species, fractions, xrd = random_batch()
  out32 = apply32(variables, species, fractions, xrd, None)
  out16 = apply16(variables, species, fractions, xrd, None)
  for key, value in out32.items():
    assert out16[key].dtype == jnp.float32, key  # outputs are float32 whatever the compute dtype
    scale = float(np.abs(value).max()) + 1e-6
    error = float(np.abs(out16[key] - value).max())
    # bf16 keeps 8 mantissa bits (~0.4 % per rounding); a few layers compound that.
    assert error <= 0.05 * scale, (key, error, scale)
  assert float(np.abs(out16["embedding"] - out32["embedding"]).max()) > 0  # really ran in bf16
