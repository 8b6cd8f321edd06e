"""Runs in a subprocess with 8 fake CPU devices (tests/test_sharding.py reads its JSON output).

One train step of a tiny model on a 1-device mesh and on an 8-device mesh from the same state and
batch; and the contrastive loss on batch-sharded inputs against a numpy reference.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # pylint: disable=g-import-not-at-top
jax.config.update("jax_platforms", "cpu")
import numpy as np  # pylint: disable=g-import-not-at-top

from xxact_jax.training import defaults, objectives, optimizer, sharding, step  # pylint: disable=g-import-not-at-top
from xxact_jax.models import build_model  # pylint: disable=g-import-not-at-top

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "configs")


def random_batch(rng, b, k=6):
  species = np.zeros((b, k), np.int32)
  fractions = np.zeros((b, k), np.float32)
  for i in range(b):
    n = rng.integers(1, k + 1)
    species[i, :n] = rng.choice(np.arange(1, 90), n, replace=False)
    f = rng.random(n) + 0.1
    fractions[i, :n] = np.sort(f / f.sum())[::-1]
  xrd = (rng.random((b, 4250)) ** 8 * 100).astype(np.float16)
  return {"species": species, "fractions": fractions, "xrd": xrd,
          "formation_energy_per_atom": rng.normal(size=b).astype(np.float32),
          "crystal_system": rng.integers(0, 7, b).astype(np.int32)}


def one_step(config, devices, batch):
  mesh = sharding.make_mesh(devices)
  model = build_model(defaults.model_of(config))
  tx, schedule = optimizer.make_optimizer(config.optimizer, 10)
  init = step.make_init_fn(model, tx, batch["species"].shape[1])
  abstract = jax.eval_shape(init, jax.random.key(0))
  shard = sharding.state_shardings(mesh, abstract, config.sharding.fsdp)
  state = jax.jit(init, out_shardings=shard)(jax.random.key(0))
  stats = {"formation_energy_per_atom": {"mean": 0.1, "std": 1.3}}
  fn = jax.jit(step.make_train_step(model, tx, schedule, config, stats, len(devices)),
               in_shardings=(shard, sharding.batch_sharding(mesh)),
               out_shardings=(shard, sharding.replicated(mesh)))
  new_state, metrics = fn(state, sharding.global_batch(batch, sharding.batch_sharding(mesh)))
  return jax.device_get(new_state["params"]), {k: float(v) for k, v in metrics.items()}


def main():
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  batch = random_batch(rng, 16)
  out = {}
  for objective, fsdp in (("supervised", False), ("mxm_contrastive", True)):
    config = defaults.load_config_file(os.path.join(CONFIGS, f"{objective}.py"), "runlocal")
    config.model.dtype = "float32"
    config.sharding.fsdp = fsdp
    p1, m1 = one_step(config, jax.devices()[:1], batch)
    p8, m8 = one_step(config, jax.devices(), batch)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), p1, p8))
    scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(p1))
    out[f"{objective}{'_fsdp' if fsdp else ''}"] = {
        "loss_1": m1["loss"], "loss_8": m8["loss"], "max_param_diff": max(diffs),
        "param_scale": scale}

  # Contrastive loss over the global batch on 8 devices vs numpy.
  b, d = 32, 12
  comp = rng.normal(size=(b, d)).astype(np.float32)
  xrd = rng.normal(size=(b, d)).astype(np.float32)
  scale = np.float32(np.log(1 / 0.07))
  mesh = sharding.make_mesh()
  bs = sharding.batch_sharding(mesh)
  loss, metrics = jax.jit(objectives.contrastive_loss)(
      jax.device_put(comp, bs), jax.device_put(xrd, bs), scale)
  cn = comp / np.linalg.norm(comp, axis=1, keepdims=True)
  xn = xrd / np.linalg.norm(xrd, axis=1, keepdims=True)
  logits = np.exp(scale) * cn @ xn.T
  def ce(l):
    l = l - l.max(1, keepdims=True)
    return -np.mean(np.diag(l) - np.log(np.exp(l).sum(1)))
  ref = 0.5 * (ce(logits.astype(np.float64)) + ce(logits.T.astype(np.float64)))
  acc = 0.5 * (np.mean(logits.argmax(1) == np.arange(b)) + np.mean(logits.argmax(0) == np.arange(b)))
  out["contrastive"] = {"jax": float(loss), "numpy": float(ref),
                        "acc_jax": float(metrics["retrieval_accuracy"]), "acc_numpy": float(acc)}
  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main()
