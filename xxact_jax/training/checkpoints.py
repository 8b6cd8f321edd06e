"""Orbax checkpoints: the last N and the best on validation, plus parameter-only restores.

A checkpoint step holds four items: `params`, `train` (step + optimiser state), `data_iter` (the
Grain iterator state, JSON) and `extra` (config and target statistics, JSON). Inference and
fine-tuning restore `params` alone, so they never materialise optimiser state.
"""

import dataclasses
import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from xxact_jax.models import config as model_config_lib

LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used (missing, truncated, or from another model)."""


def _manager(directory: str, keep: int, best_metric: str | None = None,
             create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create, enable_async_checkpointing=True,
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
      best_mode="min",
      # Orbax names its cross-process barriers the same in every manager: the latest and best
      # managers, saving the same step at once, would otherwise meet at each other's and hang.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=os.path.basename(os.path.normpath(directory))))
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _jsonable(x):
  if isinstance(x, bytes):
    return {"__bytes__": x.decode("latin-1")}
  return x


def _from_jsonable(x):
  if isinstance(x, dict) and set(x) == {"__bytes__"}:
    return x["__bytes__"].encode("latin-1")
  return x


class Checkpointer:
  """Saves training state asynchronously into WORKDIR/checkpoints and WORKDIR/checkpoints_best."""

  def __init__(self, workdir: str, keep: int, best_metric: str):
    self.workdir = workdir
    self.best_metric = best_metric
    self.latest = _manager(os.path.join(workdir, LATEST_DIR), keep)
    self.best = _manager(os.path.join(workdir, BEST_DIR), 1, best_metric)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _args(self, state, data_state, extra):
    return ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        train=ocp.args.StandardSave({"step": state["step"], "opt_state": state["opt_state"]}),
        data_iter=ocp.args.JsonSave({"state": _jsonable(data_state)}),
        extra=ocp.args.JsonSave(extra))

  def save(self, step: int, state, data_state, extra: dict, eval_metrics: dict | None = None):
    self.latest.save(step, args=self._args(state, data_state, extra), force=True)
    if eval_metrics is not None and self.best_metric in eval_metrics:
      self.best.save(step, args=self._args(state, data_state, extra),
                     metrics={self.best_metric: float(eval_metrics[self.best_metric])}, force=True)

  def restore(self, abstract_state) -> tuple[Any, Any, dict]:
    """Restores the latest step onto `abstract_state`'s shapes and shardings."""
    step = self.latest.latest_step()
    path = os.path.join(self.workdir, LATEST_DIR, str(step))
    try:
      restored = self.latest.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_state["params"]),
          train=ocp.args.StandardRestore({"step": abstract_state["step"],
                                          "opt_state": abstract_state["opt_state"]}),
          data_iter=ocp.args.JsonRestore(),
          extra=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types; all mean the same to the user.
      raise CheckpointError(
          f"Cannot restore checkpoint {path}: {type(e).__name__}: {str(e)[:500]}\n"
          "It is truncated, corrupt or was written by a different model. Nothing was deleted; "
          "move the workdir aside or train into a new --workdir.") from e
    state = {"step": restored["train"]["step"], "params": restored["params"],
             "opt_state": restored["train"]["opt_state"]}
    return state, _from_jsonable(restored["data_iter"]["state"]), restored["extra"]

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def _checkpoint_dir(workdir: str, which: str) -> tuple[str, int]:
  order = {"best": (BEST_DIR, LATEST_DIR), "latest": (LATEST_DIR, BEST_DIR)}
  if which not in order:
    raise ValueError(f"which={which!r}: expected 'best' or 'latest'")
  for name in order[which]:
    directory = os.path.join(workdir, name)
    if os.path.isdir(directory):
      steps = ocp.utils.checkpoint_steps(directory)
      if steps:
        return directory, max(steps)
  raise CheckpointError(f"No checkpoint in workdir {workdir!r} (looked in {LATEST_DIR}/ and "
                        f"{BEST_DIR}/). Train first: python -m xxact_jax.main --workdir=...")


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
  """Parameters of a trained workdir and what the trainer saved beside them."""
  params: Any
  config: Any            # ml_collections.ConfigDict of the run
  target_stats: dict     # {target: {"mean", "std"}} for de-standardising regression outputs
  step: int
  path: str
  extra: dict            # config, target_stats, data_path, max_elements


def restore_checkpoint(workdir: str, which: str = "best") -> RestoredCheckpoint:
  """Parameters (no optimiser state) and metadata of a workdir's best or latest checkpoint.

  `which="best"` falls back to the latest checkpoint when no best one was kept, and vice versa.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  directory, step = _checkpoint_dir(workdir, which)
  path = os.path.join(directory, str(step))
  mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
  # Arrays saved over devices this process lacks (a bigger mesh, other processes) are read onto
  # one local device instead of failing with Orbax's topology mismatch.
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(fallback_sharding=local), extra=ocp.args.JsonRestore()))
  except Exception as e:  # Orbax raises many types; all mean the same to the user.
    raise CheckpointError(f"Cannot restore parameters from {path}: {type(e).__name__}: "
                          f"{str(e)[:500]}") from e
  finally:
    mngr.close()
  extra = dict(restored["extra"])
  params = jax.tree.map(np.asarray, restored["params"])
  logging.info("Restored parameters of step %d from %s", step, path)
  config = ml_collections.ConfigDict(extra["config"])
  model_config_lib.upgrade(config.model)
  return RestoredCheckpoint(params=params, config=config,
                            target_stats=extra["target_stats"], step=step, path=path,
                            extra=extra)


def restore_params(workdir: str, which: str = "best"):
  """(params, config, target_stats) of a trained workdir, without optimiser state."""
  r = restore_checkpoint(workdir, which)
  return r.params, r.config, r.target_stats


def config_to_json(config) -> dict:
  """A JSON-safe dict of an ml_collections config (tuples become lists)."""
  return json.loads(config.to_json_best_effort())
