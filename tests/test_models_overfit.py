"""A tiny XxaCT-NN memorises 32 real records through the package's own train step and
objectives: the full path learns, not just runs (supervised targets, masked XRD modelling and
contrastive alignment)."""

import os

import jax
import numpy as np
import pytest

from xxact_jax.data import open_dataset
from xxact_jax.models import build_model
from xxact_jax.training import defaults
from xxact_jax.training import eval_loop as eval_lib
from xxact_jax.training import optimizer as optimizer_lib
from xxact_jax.training import step as step_lib
from xxact_jax.training import train as train_lib

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
NUM_RECORDS = 32


def memorise(objective: str, dataset: str, steps: int):
  """`steps` train steps of configs/<objective>.py:runlocal (no dropout) on one batch of 32
  records; returns the metrics of every step and the package's eval step on the batch after."""
  config = defaults.load_config_file(os.path.join(CONFIGS, f"{objective}.py"), "runlocal")
  config.model.dropout = 0.0
  config.model.dtype = "float32"
  config.optimizer.peak_lr = config.optimizer.end_lr = 3e-3
  config.optimizer.warmup_fraction = 0.02
  ds = open_dataset(dataset, split="train")
  rows = ds.read_batch(np.arange(NUM_RECORDS))
  batch = {k: rows[k] for k in eval_lib.batch_keys(config.targets)}
  target_stats = train_lib.target_statistics(ds.metadata, config.targets, dataset)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps=steps)
  model = build_model(defaults.model_of(config))
  state = jax.jit(step_lib.make_init_fn(model, tx, ds.metadata["max_elements"]))(
      jax.random.key(0))
  train_step = jax.jit(step_lib.make_train_step(model, tx, schedule, config, target_stats))
  history = []
  for _ in range(steps):
    state, metrics = train_step(state, batch)
    history.append(jax.device_get(metrics))
  evaluated = jax.jit(step_lib.make_eval_step(model, config, target_stats))(
      state["params"], dict(batch, valid=np.ones(NUM_RECORDS, bool)))
  return history, jax.device_get(evaluated)


def mean_of(history, key, part):
  return float(np.mean([m[key] for m in part(history)]))


@pytest.mark.slow
def test_supervised_objective_memorises_32_real_records(embedded_dataset):
  history, evaluated = memorise("supervised", embedded_dataset, 300)
  labels = evaluated["label/crystal_system"]
  assert len(np.unique(labels)) > 1   # a constant guess cannot pass
  first, last = (lambda h: h[:10]), (lambda h: h[-10:])
  for key in ("loss/formation_energy_per_atom", "loss/crystal_system"):
    assert mean_of(history, key, last) < 0.05 * mean_of(history, key, first), key
  np.testing.assert_array_equal(evaluated["pred/crystal_system"], labels)
  energy = evaluated["label/formation_energy_per_atom"]
  error = np.abs(evaluated["pred/formation_energy_per_atom"] - energy)
  assert error.mean() < 0.2 * np.abs(energy - energy.mean()).mean()   # 11 % after 300 steps


@pytest.mark.slow
def test_pretraining_objectives_fall_through_the_train_step(embedded_dataset):
  """MXM (a random token masked per pattern each step) and the CLIP-style loss of 32 pairs."""
  history, evaluated = memorise("mxm_contrastive", embedded_dataset, 200)
  first, last = (lambda h: h[:10]), (lambda h: h[-10:])
  assert mean_of(history, "mxm_loss", last) < 0.5 * mean_of(history, "mxm_loss", first)
  # ln 32 = 3.47 is chance for 32 pairs; aligned pairs drive it towards 0.
  assert mean_of(history, "contrastive_loss", first) > 2.5
  assert mean_of(history, "contrastive_loss", last) < 0.5
  assert mean_of(history, "retrieval_accuracy", last) > 0.9
  assert float(evaluated["batch/retrieval_accuracy"]) > 0.9   # the eval step agrees
