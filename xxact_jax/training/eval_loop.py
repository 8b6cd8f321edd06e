"""Evaluation over a whole held-out split: regression MAE, class accuracies, MXM and contrastive."""

import jax
import numpy as np
from jax.experimental import multihost_utils

from xxact_jax import targets as targets_lib
from xxact_jax.report import metrics as metrics_lib
from xxact_jax.training import sharding as sharding_lib
from xxact_jax.training.step import INPUT_KEYS


def batch_keys(targets) -> tuple[str, ...]:
  return INPUT_KEYS + tuple(targets)


def evaluate(eval_step, params, ds, config, mesh, return_predictions: bool = False):
  """Runs `eval_step` (jitted) over all of `ds`; returns {"eval/...": value} (and predictions)."""
  targets = tuple(config.targets)
  sharding = sharding_lib.batch_sharding(mesh)
  outs = []
  # Local batches of eval_batch_size // process_count rows with a `valid` flag (the last padded);
  # every process runs the same number of batches, as the jitted step needs all of them.
  pc, pi = jax.process_count(), jax.process_index()
  local_bs = config.eval_batch_size // pc
  rows = np.arange(len(ds))
  per_process = int(np.ceil(len(rows) / pc))
  mine = rows[pi * per_process:(pi + 1) * per_process]
  for b in range(int(np.ceil(per_process / local_bs))):
    idx = mine[b * local_bs:(b + 1) * local_bs]
    index = np.concatenate([idx, np.full(local_bs - len(idx), rows[0], idx.dtype)])
    data = ds.read_batch(index)
    batch = {k: np.asarray(data[k]) for k in batch_keys(targets)}
    batch["valid"] = np.arange(local_bs) < len(idx)
    res = dict(eval_step(params, sharding_lib.global_batch(batch, sharding)), index=index)
    outs.append(multihost_utils.process_allgather(res, tiled=True) if jax.process_count() > 1
                else jax.tree.map(np.asarray, res))
  per_example = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]
                 if not k.startswith("batch/")}
  valid = per_example["valid"]
  m = {}
  loss = 0.0
  for i, t in enumerate(targets):
    sel = valid & per_example["labelled"][:, i]
    pred, label = per_example[f"pred/{t}"][sel], per_example[f"label/{t}"][sel]
    target_loss = float(per_example["losses"][sel, i].mean()) if sel.any() else float("nan")
    m[f"eval/loss/{t}"] = target_loss
    loss += target_loss
    target = targets_lib.get(t)
    if not target.is_regression:
      m[f"eval/{t}_accuracy"] = float(np.mean(pred == label)) if sel.any() else float("nan")
      if target.class_names:   # per class, where classes have names (NaN for an absent one)
        recall = metrics_lib.per_class_accuracy(metrics_lib.confusion_matrix(
            target.class_index(label), target.class_index(pred), len(target.class_names)))
        m.update({f"eval/{t}_accuracy/{name}": float(r)
                  for name, r in zip(target.class_names, recall)})
    else:
      mae = float(np.mean(np.abs(pred - label))) if sel.any() else float("nan")
      m[f"eval/{t}_mae"] = mae
      if target.scaled_mae:
        suffix, factor = target.scaled_mae
        m[f"eval/{t}_mae_{suffix}"] = factor * mae
  if "mxm_loss" in per_example:
    m["eval/mxm_loss"] = float(per_example["mxm_loss"][valid].mean())
    loss += m["eval/mxm_loss"]
  if "contrastive" in config.objective:
    weights = np.array([o["valid"].sum() for o in outs], np.float64)
    for k in ("contrastive_loss", "retrieval_accuracy"):
      vals = np.array([o[f"batch/{k}"] for o in outs], np.float64)
      m[f"eval/{k}"] = float(np.sum(vals * weights) / weights.sum())
    loss += m["eval/contrastive_loss"]
  m["eval/loss"] = loss
  m["eval/num_examples"] = int(valid.sum())
  if return_predictions:
    keep = {k: v[valid] for k, v in per_example.items()
            if k.startswith(("pred/", "label/")) or k == "index"}
    return m, keep
  return m
