"""Training objectives: supervised (single/multi-target), masked XRD modelling, contrastive.

All losses are computed in float32 from the model's outputs dict (docs/ARCHITECTURE.md).
Regression targets are standardised with training-split statistics; missing labels (NaN, or -1 for
classes) are masked out of every loss.
"""

from typing import Mapping

import jax
import jax.numpy as jnp

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.models import encoders
from xxact_jax.models.baselines import robust_l1_per_example

# The largest CLIP logit scale, as in CLIP (exp(scale) ≤ 100).
MAX_LOGIT_SCALE = 4.6052


def label_mask(batch, target):
  """True where `target` is labelled."""
  return targets_lib.get(target).is_labelled(batch[target], jnp)


def per_example_losses(outputs, batch, targets, target_stats, regression_loss="mse"):
  """Per-example loss for each target: MSE, L1 or CrabNet's RobustL1 on standardised values, or
  cross-entropy. [B, T]."""
  losses = []
  for t in targets:
    y = batch[t]
    target = targets_lib.get(t)
    if not target.is_regression:
      logits = outputs[t].astype(jnp.float32)
      # Unlabelled rows are masked out below; clipping keeps their index in range.
      labels = jnp.clip(target.class_index(y, jnp), 0, logits.shape[-1] - 1)
      logp = jax.nn.log_softmax(logits, axis=-1)
      loss = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    else:
      z = target.standardise(jnp.nan_to_num(y), target_stats[t])
      pred = outputs[t].astype(jnp.float32)
      if regression_loss == "mse":
        loss = jnp.square(pred - z)
      elif regression_loss == "l1":
        loss = jnp.abs(pred - z)
      elif regression_loss == "robust_l1":
        if t + "_log_std" not in outputs:
          raise ValueError(f"regression_loss='robust_l1' needs the model to output "
                           f"{t}_log_std (the crabnet model does; others with "
                           f"model.regression_log_std=True)")
        loss = robust_l1_per_example(pred, outputs[t + "_log_std"].astype(jnp.float32), z)
      else:
        raise ValueError(f"Unknown regression_loss {regression_loss!r} (mse | l1 | robust_l1)")
    losses.append(jnp.where(label_mask(batch, t), loss, 0.0))
  return jnp.stack(losses, axis=-1)


def supervised_loss(outputs, batch, targets, target_stats, rng, task_sampling="uniform",
                    regression_loss="mse"):
  """The supervised objective and per-target metrics.

  task_sampling="uniform": every example is assigned one of its labelled targets uniformly at random
  and contributes only that target's loss (the paper's multi-target training); with one target this
  is plain masked MSE / cross-entropy. "all": the mean over labelled examples of each target, summed.
  """
  losses = per_example_losses(outputs, batch, targets, target_stats, regression_loss)  # [B, T]
  labelled = jnp.stack([label_mask(batch, t) for t in targets], axis=-1)       # [B, T]
  if task_sampling == "uniform":
    noise = jax.random.gumbel(rng, labelled.shape)
    chosen = jnp.argmax(jnp.where(labelled, noise, -jnp.inf), axis=-1)
    weight = jax.nn.one_hot(chosen, len(targets)) * labelled
    loss = jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1.0)
  elif task_sampling == "all":
    weight = labelled.astype(jnp.float32)
    per_target = jnp.sum(losses * weight, 0) / jnp.maximum(jnp.sum(weight, 0), 1.0)
    loss = jnp.sum(per_target)
  else:
    raise ValueError(f"Unknown task_sampling {task_sampling!r} (uniform | all)")
  count = jnp.maximum(jnp.sum(weight, 0), 1.0)
  metrics = {f"loss/{t}": jnp.sum(losses[:, i] * weight[:, i]) / count[i]
             for i, t in enumerate(targets)}
  return loss, metrics


def sample_xrd_mask(rng, batch_size, num_tokens=constants.XRD_NUM_TOKENS, ratio=0.05):
  """Boolean [B, T]: round(ratio·T) tokens per sample, at least one, chosen uniformly."""
  n = max(1, int(round(ratio * num_tokens)))
  ranks = jnp.argsort(jax.random.uniform(rng, (batch_size, num_tokens)), axis=-1)
  return ranks < n


def mxm_loss(reconstruction, xrd, mask, xrd_scale=1.0, xrd_intensity="linear"):
  """Eq. 3: per-sample mean squared error over the masked tokens only, averaged over the batch.

  The target is the pattern in the model's input units (models/encoders.py `xrd_input`).
  """
  return jnp.mean(mxm_per_sample(reconstruction, xrd, mask, xrd_scale, xrd_intensity))


def mxm_per_sample(reconstruction, xrd, mask, xrd_scale=1.0, xrd_intensity="linear"):
  target = encoders.xrd_tokens(xrd, xrd_scale, xrd_intensity)
  err = jnp.mean(jnp.square(reconstruction.astype(jnp.float32) - target), axis=-1)   # [B, T]
  m = mask.astype(jnp.float32)
  return jnp.sum(err * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)


def contrastive_loss(comp, xrd, logit_scale, valid=None):
  """CLIP's symmetric cross-entropy over the whole (global) batch, and top-1 retrieval accuracy.

  Under jit with batch-sharded inputs the [B, B] logits span every device's examples, so every
  composition is contrasted with every XRD pattern of the global batch. `valid` (bool [B]) drops
  padding rows and columns (evaluation batches).
  """
  comp = comp.astype(jnp.float32)
  xrd = xrd.astype(jnp.float32)
  comp = comp / jnp.linalg.norm(comp, axis=-1, keepdims=True).clip(1e-6)
  xrd = xrd / jnp.linalg.norm(xrd, axis=-1, keepdims=True).clip(1e-6)
  scale = jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), MAX_LOGIT_SCALE))
  logits = scale * comp @ xrd.T                                                 # [B, B]
  n = logits.shape[0]
  labels = jnp.arange(n)
  if valid is None:
    valid = jnp.ones((n,), bool)
  logits = jnp.where(valid[None, :] & valid[:, None], logits, -1e9)
  w = valid.astype(jnp.float32) / jnp.maximum(jnp.sum(valid), 1)
  diag = jnp.diagonal(logits)
  c2x = -jnp.sum(w * (diag - jax.nn.logsumexp(logits, axis=-1)))
  x2c = -jnp.sum(w * (diag - jax.nn.logsumexp(logits, axis=0)))
  loss = 0.5 * (c2x + x2c)
  accuracy = 0.5 * (jnp.sum(w * (jnp.argmax(logits, -1) == labels))
                    + jnp.sum(w * (jnp.argmax(logits, 0) == labels)))
  return loss, {"contrastive_loss": loss, "retrieval_accuracy": accuracy,
                "temperature": 1.0 / scale}


def objective_loss(outputs, batch, config, target_stats: Mapping, rng, xrd_mask=None):
  """The total loss of `config.objective` and its metrics."""
  objective = config.objective
  metrics = {}
  total = jnp.zeros((), jnp.float32)
  if objective == "supervised":
    total, metrics = supervised_loss(outputs, batch, config.targets, target_stats, rng,
                                     config.task_sampling, config.regression_loss)
  if "mxm" in objective:
    mloss = mxm_loss(outputs["mxm"], batch["xrd"], xrd_mask, config.model.xrd_scale,
                     config.model.xrd_intensity)
    metrics["mxm_loss"] = mloss
    total = total + mloss
  if "contrastive" in objective:
    closs, cmetrics = contrastive_loss(outputs["comp_cls"], outputs["xrd_cls"],
                                       outputs["logit_scale"])
    metrics.update(cmetrics)
    total = total + closs
  if objective not in ("supervised", "mxm", "contrastive", "mxm_contrastive"):
    raise ValueError(f"Unknown objective {objective!r}")
  metrics["loss"] = total
  return total, metrics
