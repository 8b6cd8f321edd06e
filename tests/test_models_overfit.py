"""A tiny XxaCT-NN memorises 32 real records: the full path learns, not just runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xxact_jax.data import open_dataset
from xxact_jax.models import build_model
from xxact_jax.models import model_config
from xxact_jax.models import xrd_tokens

NUM_RECORDS, NUM_STEPS = 32, 300


@pytest.mark.slow
def test_tiny_xxact_overfits_32_real_records(embedded_dataset):
  ds = open_dataset(embedded_dataset, split="train")
  batch = ds.read_batch(np.arange(NUM_RECORDS))
  energy = batch["formation_energy_per_atom"]
  stats = ds.metadata["label_stats"]["formation_energy_per_atom"]
  energy_z = (energy - stats["mean"]) / stats["std"]
  crystal_system = batch["crystal_system"]
  assert np.isfinite(energy).all() and (crystal_system >= 0).all()
  assert len(np.unique(crystal_system)) > 1  # a constant guess cannot pass

  cfg = model_config("xxact", "tiny")
  cfg.dtype = "float32"
  cfg.dropout = 0.0
  cfg.mxm = True
  model = build_model(cfg)
  inputs = (batch["species"], batch["fractions"], batch["xrd"])
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *inputs)["params"]
  mask = np.zeros((NUM_RECORDS, 17), bool)
  mask[np.arange(NUM_RECORDS), np.arange(NUM_RECORDS) % 17] = True
  mxm_target = xrd_tokens(batch["xrd"], cfg.xrd_scale)

  def losses(p):
    out = model.apply({"params": p}, *inputs, xrd_mask=mask, train=True)
    mse = jnp.mean((out["formation_energy_per_atom"] - energy_z) ** 2)
    ce = optax.softmax_cross_entropy_with_integer_labels(out["crystal_system"],
                                                         crystal_system).mean()
    mxm = jnp.sum(jnp.mean((out["mxm"] - mxm_target) ** 2, -1) * mask) / mask.sum()
    return mse + ce + mxm, (mse, ce, mxm, out)

  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(p, opt_state):
    grads, aux = jax.grad(losses, has_aux=True)(p)
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, aux

  opt_state = optimizer.init(params)
  _, (mse0, ce0, mxm0, _) = jax.jit(losses)(params)
  for _ in range(NUM_STEPS):
    params, opt_state, (mse, ce, mxm, out) = step(params, opt_state)
  accuracy = float(np.mean(np.argmax(out["crystal_system"], -1) == crystal_system))
  assert float(mse) < 0.05 * float(mse0) and float(mse) < 0.05, (mse0, mse)
  assert float(ce) < 0.1 < float(ce0), (ce0, ce)
  assert accuracy == 1.0
  assert float(mxm) < 0.5 * float(mxm0), (mxm0, mxm)
