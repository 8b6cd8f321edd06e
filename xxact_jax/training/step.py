"""The pure train and eval step functions and the sharded train-state initialisation.

State is a plain dict pytree {"step", "params", "opt_state"} so that Orbax saves it as it is.
"""

import jax
import jax.numpy as jnp
import optax

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.data import augment
from xxact_jax.data import resimulate
from xxact_jax.training import objectives

INPUT_KEYS = ("species", "fractions", "xrd")
# Folded into a step's key for the augmentation draws, leaving the other streams as they were.
AUGMENT_STREAM = 0x61756721
# ... and for the per-reflection effects of re-simulated patterns (data.xrd_source="simulated").
STRUCTURE_STREAM = 0x73696d75


def simulates_xrd(config) -> bool:
  """Whether the train step computes its patterns from stored structures."""
  return config.data.xrd_source == "simulated"


def batch_struct(batch_size: int, max_elements: int, targets=constants.ALL_TARGETS):
  """ShapeDtypeStructs of a training batch (docs/ARCHITECTURE.md)."""
  s = {"species": jax.ShapeDtypeStruct((batch_size, max_elements), jnp.int32),
       "fractions": jax.ShapeDtypeStruct((batch_size, max_elements), jnp.float32),
       "xrd": jax.ShapeDtypeStruct((batch_size, constants.NUM_XRD_POINTS), jnp.float16)}
  for t in targets:
    dtype = jnp.int32 if t in constants.CLASSIFICATION_TARGETS else jnp.float32
    s[t] = jax.ShapeDtypeStruct((batch_size,), dtype)
  return s


def make_init_fn(model, tx, max_elements: int):
  """rng -> initial state; jit it with out_shardings for a sharded initialisation."""

  def init(rng):
    species = jnp.ones((2, max_elements), jnp.int32)
    fractions = jnp.full((2, max_elements), 1.0 / max_elements, jnp.float32)
    xrd = jnp.zeros((2, constants.NUM_XRD_POINTS), jnp.float32)
    params = model.init({"params": rng, "dropout": rng}, species, fractions, xrd,
                        train=False)["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

  return init


def _microbatches(batch, num, num_shards):
  """[B, ...] -> [num, B/num, ...] taking rows from every shard, so no data crosses devices."""

  def split(x):
    b = x.shape[0]
    x = x.reshape(num_shards, num, b // (num_shards * num), *x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape(num, b // num, *x.shape[3:])

  return jax.tree.map(split, batch)


def make_train_step(model, tx, schedule, config, target_stats, num_shards: int = 1,
                    scattering=None):
  """(state, batch) -> (state, metrics): forward, loss, backward, AdamW update.

  scattering: f32[Z + 1, 4, 2] atomic scattering parameters (structures.coefficient_table),
  needed with data.xrd_source="simulated".
  """
  # Each step folds its number into this key (threefry: on an H100 XLA's RngBitGenerator was no
  # faster for this step, benchmarks/RESULTS.md).
  base_rng = jax.random.key(config.seed + 1)
  accum = config.grad_accum_steps

  augment_config = config.get("augment")
  augmenting = augment_config is not None and augment_config.enabled
  simulated = simulates_xrd(config)
  if simulated and scattering is None:
    raise ValueError('data.xrd_source="simulated" needs the dataset\'s scattering parameters')
  if simulated:
    structure_config = (augment_config.get("structure") if augment_config is not None else None
                        ) or resimulate.default_config()

  def loss_fn(params, batch, rng):
    r_drop, r_mask, r_task = jax.random.split(rng, 3)
    if simulated:
      effects = (resimulate.random_effects(jax.random.fold_in(rng, STRUCTURE_STREAM),
                                           batch["xrd"].shape[0], structure_config)
                 if augmenting else None)
      batch = dict(batch, xrd=resimulate.simulate(batch, jnp.asarray(scattering), effects,
                                                  max_sigma=structure_config.max_sigma_deg))
    measured = None
    if augmenting:
      # The model sees, and MXM reconstructs, the pattern as a diffractometer would record it.
      xrd, measured = augment.augment_xrd_with_flags(jax.random.fold_in(rng, AUGMENT_STREAM),
                                                     batch["xrd"], augment_config)
      batch = dict(batch, xrd=xrd)
    xrd_mask = None
    if "mxm" in config.objective:
      xrd_mask = objectives.sample_xrd_mask(r_mask, batch["xrd"].shape[0],
                                            ratio=config.mxm_mask_ratio)
    outputs = model.apply({"params": params}, batch["species"], batch["fractions"], batch["xrd"],
                          xrd_mask=xrd_mask, train=True, measured=measured,
                          rngs={"dropout": r_drop})
    return objectives.objective_loss(outputs, batch, config, target_stats, r_task, xrd_mask)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    rng = jax.random.fold_in(base_rng, state["step"])
    params = state["params"]
    if accum == 1:
      (_, metrics), grads = grad_fn(params, batch, rng)
    else:
      def body(carry, xs):
        micro, i = xs
        (_, m), g = grad_fn(params, micro, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, carry, (g, m)), None
      micro_b = _microbatches(batch, accum, num_shards)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                           jax.eval_shape(lambda b: grad_fn(params, b, rng),
                                          jax.tree.map(lambda x: x[0], micro_b)))
      (grads, metrics), _ = jax.lax.scan(body, (zeros[1], zeros[0][1]),
                                         (micro_b, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      metrics = jax.tree.map(lambda m: m / accum, metrics)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    metrics = dict(metrics, learning_rate=schedule(state["step"]),
                   grad_norm=optax.tree.norm(grads))
    return {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}, metrics

  return train_step


def make_eval_step(model, config, target_stats):
  """(params, batch with "valid") -> per-example arrays and per-batch contrastive figures."""
  mask_rng = jax.random.key(config.seed + 2)
  targets = tuple(config.targets)

  def eval_step(params, batch):
    xrd_mask = None
    if "mxm" in config.objective:
      # A fixed mask per position in the eval batch keeps eval losses comparable across steps.
      xrd_mask = objectives.sample_xrd_mask(mask_rng, batch["xrd"].shape[0],
                                            ratio=config.mxm_mask_ratio)
    outputs = model.apply({"params": params}, batch["species"], batch["fractions"], batch["xrd"],
                          xrd_mask=xrd_mask, train=False)
    res = {"valid": batch["valid"]}
    if targets:
      res["losses"] = objectives.per_example_losses(outputs, batch, targets, target_stats,
                                                    config.regression_loss)
      res["labelled"] = jnp.stack([objectives.label_mask(batch, t) for t in targets], -1)
    for t in targets:
      target = targets_lib.get(t)
      if target.is_regression:
        res[f"pred/{t}"] = target.destandardise(outputs[t].astype(jnp.float32), target_stats[t])
      else:   # as stored, to compare with the label
        res[f"pred/{t}"] = target.label_of(jnp.argmax(outputs[t], -1))
      res[f"label/{t}"] = batch[t]
    if xrd_mask is not None:
      res["mxm_loss"] = objectives.mxm_per_sample(outputs["mxm"], batch["xrd"], xrd_mask,
                                                  config.model.xrd_scale,
                                                  config.model.xrd_intensity)
    if "contrastive" in config.objective:
      _, c = objectives.contrastive_loss(outputs["comp_cls"], outputs["xrd_cls"],
                                         outputs["logit_scale"], valid=batch["valid"])
      res["batch/contrastive_loss"] = c["contrastive_loss"]
      res["batch/retrieval_accuracy"] = c["retrieval_accuracy"]
    return res

  return eval_step
