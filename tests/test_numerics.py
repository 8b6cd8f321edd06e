"""bfloat16 compute against float32 with the same parameters: forward passes and one train step.

tests/test_models_invariance.py already compares the XxaCT forward pass; here are the baselines'
forward passes and the trainer's whole step (loss, metrics, updated parameters and their update
deltas) on real records, for the supervised and mxm_contrastive objectives.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax.data import open_dataset
from xxact_jax.models import build_model
from xxact_jax.models import model_config
from xxact_jax.training import defaults
from xxact_jax.training import eval_loop as eval_lib
from xxact_jax.training import optimizer as optimizer_lib
from xxact_jax.training import step as step_lib
from xxact_jax.training import train as train_lib

from test_models import random_batch

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
BATCH = 16
WARMUP_STEPS = 3
# bf16 keeps 8 mantissa bits (~0.4 % per rounding); one tiny layer per part compounds a few.
LOSS_RTOL = 2e-2
GRAD_NORM_RTOL = 5e-2
DELTA_RTOL = 0.1          # relative norm of (bf16 update - f32 update) over all parameters
PARAM_RTOL = 1e-2


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("name", ["crabnet", "xrd_transformer", "pxrd_fcn_mlp"])
def test_baseline_forward_in_bfloat16_agrees_with_float32(name):
  configs = {}
  for dtype in ("float32", "bfloat16"):
    configs[dtype] = model_config(name, "tiny")
    configs[dtype].dtype = dtype
    configs[dtype].targets = constants.ALL_TARGETS
    configs[dtype].mxm = name == "xrd_transformer"
  inputs = random_batch(batch=4)
  variables = jax.jit(build_model(configs["float32"]).init)(jax.random.key(0, impl="rbg"), *inputs)
  outputs = {dtype: jax.jit(functools.partial(build_model(c).apply, train=False))(variables,
                                                                                  *inputs)
             for dtype, c in configs.items()}
  for key, reference in outputs["float32"].items():
    low = outputs["bfloat16"][key]
    assert low.dtype == jnp.float32, key   # outputs are float32 whatever the compute dtype
    # Relative to the output's scale: single elements near zero carry no relative precision.
    scale = float(np.abs(reference).max()) + 1e-6
    assert float(np.abs(low - reference).max()) <= 0.05 * scale, key
  assert not np.array_equal(outputs["bfloat16"]["embedding"], outputs["float32"]["embedding"])


def load_config(name: str):
  config = defaults.load_config_file(os.path.join(CONFIGS, f"{name}.py"), "runlocal")
  config.model.dropout = 0.0   # the two steps must see the same network
  return config


def real_batches(path: str, targets, count: int):
  ds = open_dataset(path, split="train")
  keys = eval_lib.batch_keys(targets)
  batches = []
  for i in range(count):
    rows = ds.read_batch(np.arange(i * BATCH, (i + 1) * BATCH))
    batches.append({k: rows[k] for k in keys})
  return batches, ds.metadata


def update_deltas_without_key_biases(new_params, old_params) -> np.ndarray:
  """All of new - old in one vector, less the key-projection biases.

  Softmax ignores a constant added to every logit, so a key bias has an exactly zero gradient:
  what either dtype computes for it is rounding noise, which Adam scales up to a full-size step.
  """
  parts = []
  for path, new in jax.tree_util.tree_flatten_with_path(new_params)[0]:
    names = [getattr(p, "key", None) for p in path]
    delta = np.asarray(new, np.float64) - np.asarray(
        functools.reduce(lambda t, k: t[k], names, old_params), np.float64)
    if names[-2:] == ["qkv", "bias"]:
      delta = delta[[0, 2]]           # (q, k, v) along axis 0
    elif names[-2:] == ["kv", "bias"]:
      delta = delta[1]
    parts.append(delta.ravel())
  return np.concatenate(parts)


@pytest.mark.parametrize("objective", ["supervised", "mxm_contrastive"])
def test_train_step_in_bfloat16_agrees_with_float32(objective, embedded_dataset):
  config = load_config(objective)
  batches, metadata = real_batches(embedded_dataset, config.targets, WARMUP_STEPS + 2)
  target_stats = train_lib.target_statistics(metadata, config.targets, embedded_dataset)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps=20)
  steps = {}
  for dtype in ("float32", "bfloat16"):
    c = config.copy_and_resolve_references()
    c.model.dtype = dtype
    steps[dtype] = jax.jit(step_lib.make_train_step(build_model(defaults.model_of(c)), tx,
                                                    schedule, c, target_stats))
  init = step_lib.make_init_fn(build_model(defaults.model_of(config)), tx, metadata["max_elements"])
  state = jax.jit(init)(jax.random.key(0))
  # Past Adam's first steps, where an update is sign(gradient) and flips on rounding noise.
  for batch in batches[2:]:
    state, _ = steps["float32"](state, batch)

  batch, other_batch = batches[0], batches[1]
  new32, metrics32 = steps["float32"](state, batch)
  new16, metrics16 = steps["bfloat16"](state, batch)
  assert set(metrics16) == set(metrics32)
  for key in metrics32:
    if key.startswith("loss") or key.endswith("_loss"):
      assert float(metrics16[key]) == pytest.approx(float(metrics32[key]), rel=LOSS_RTOL), key
  assert float(metrics16["loss"]) != float(metrics32["loss"])   # really computed in bfloat16
  assert float(metrics16["grad_norm"]) == pytest.approx(float(metrics32["grad_norm"]),
                                                        rel=GRAD_NORM_RTOL)
  assert int(new16["step"]) == int(new32["step"]) == WARMUP_STEPS + 1

  # An Adam step moves a parameter by about the learning rate, whatever its gradient's size, so
  # near-zero parameters (biases start at 0) differ by up to that much.
  step_size = 3 * float(metrics32["learning_rate"])
  for (path, p16), p32 in zip(jax.tree_util.tree_flatten_with_path(new16["params"])[0],
                              jax.tree.leaves(new32["params"])):
    assert p16.dtype == jnp.float32, path
    np.testing.assert_allclose(p16, p32, rtol=PARAM_RTOL, atol=step_size,
                               err_msg=jax.tree_util.keystr(path))

  delta32 = update_deltas_without_key_biases(new32["params"], state["params"])
  delta16 = update_deltas_without_key_biases(new16["params"], state["params"])
  assert relative_error(delta16, delta32) <= DELTA_RTOL
  # The tolerance tells updates apart: a step on other records lands far outside it.
  other32, _ = steps["float32"](state, other_batch)
  delta_other = update_deltas_without_key_biases(other32["params"], state["params"])
  assert relative_error(delta_other, delta32) > 2 * DELTA_RTOL
