"""Orbax checkpoints: the last N and the best on validation, plus parameter-only restores.

One CheckpointManager writes WORKDIR/checkpoints/; its preservation policy keeps the newest
`keep` steps and the step with the lowest tracked metric (saved with its eval metrics), so the
best state is never written twice. Workdirs of earlier versions also have checkpoints_best/,
still read by inference.

A checkpoint step holds four items: `params`, `train` (step + optimiser state), `data_iter` (the
Grain iterator state, JSON) and `extra` (config and target statistics, JSON). Inference and
fine-tuning restore `params` alone, so they never materialise optimiser state.

Once Orbax has finalised a step, `CHECKSUM_FILE` in the step's directory records the size and
CRC-32 of every file in it. A restore checks them first, so a flipped bit or a truncated file is
found before it is loaded; the trainer then falls back to the newest intact step and moves the
damaged one to `checkpoints_damaged/`, and inference skips it with a warning. Steps written before
checksums existed (or whose checksum was not written yet when the process died) are trusted if
Orbax can restore them.
"""

import dataclasses
import json
import logging as logging_std
import os
import shutil
import time
from typing import Any
import zlib

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policy_lib

from xxact_jax import stored_config

LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"
DAMAGED_DIR = "checkpoints_damaged"
CHECKSUM_FILE = "xxact_checksums.json"
_CHUNK = 1 << 22


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used (missing, truncated, or from another model)."""


def _manager(directory: str, keep: int, best_metric: str | None = None,
             create: bool = True) -> ocp.CheckpointManager:
  """The workdir's manager: the newest `keep` steps, and the best on `best_metric` (lower is
  better) among the steps saved with metrics."""
  metric = (lambda m: m[best_metric]) if best_metric else None
  policies = [policy_lib.LatestN(n=keep)]
  if metric:
    policies.append(policy_lib.BestN(get_metric_fn=metric, reverse=True, n=1,
                                     keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      create=create, enable_async_checkpointing=True,
      preservation_policy=policy_lib.AnyPreservationPolicy(policies=policies),
      best_fn=metric, best_mode="min")
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


class _NoMetricsNote(logging_std.Filter):
  """Drops Orbax's warning for steps saved without metrics: only eval steps carry them."""

  def filter(self, record):
    return "did not provide metrics" not in record.getMessage()


logging.get_absl_logger().addFilter(_NoMetricsNote())


METRICS_FILE = os.path.join("metrics", "metrics")   # what Orbax saves a step's metrics in


def step_metrics(step_dir: str) -> tuple[dict | None, str | None]:
  """(the metrics a step was saved with, or None; what is wrong with its metrics file, or None).

  Orbax's CheckpointManager reads every step's metrics file when it opens a directory, before
  any checksum is checked, and a truncated or garbled one stops it with a bare JSONDecodeError;
  so they are read here first.
  """
  path = os.path.join(step_dir, METRICS_FILE)
  if not os.path.exists(path):
    return None, None
  try:
    with open(path, encoding="utf-8") as f:
      metrics = json.load(f)
  except (OSError, ValueError) as e:
    return None, f"{METRICS_FILE} is unreadable ({type(e).__name__}: {e})"
  if (not isinstance(metrics, dict) or not metrics
      or not all(isinstance(v, (int, float)) for v in metrics.values())):
    return None, f"{METRICS_FILE} holds no metric values: {str(metrics)[:80]!r}"
  return metrics, None


def tracked_best_step(directory: str) -> int | None:
  """The step with the lowest metric among a checkpoint directory's steps saved with one
  (None if none was); as Orbax's best_step, the later step on a tie. Read without Orbax, so a
  step with an unreadable metrics file is skipped (with a warning) instead of stopping it."""
  best = None
  for step in _steps_newest_first(directory):
    metrics, problem = step_metrics(os.path.join(directory, str(step)))
    if problem is not None:
      logging.warning("Checkpoint %s: %s; not a candidate for the best step",
                      os.path.join(directory, str(step)), problem)
    # A step is saved with one metric (the trainer's best_metric), whatever its name.
    if metrics is not None and (best is None or next(iter(metrics.values())) < best[0]):
      best = (next(iter(metrics.values())), step)
  return None if best is None else best[1]


def _crc32(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def write_checksums(step_dir: str) -> None:
  """Records size and CRC-32 of every file of a finalised step (atomically)."""
  table = {}
  for root, _, names in os.walk(step_dir):
    for path in (os.path.join(root, n) for n in names if n != CHECKSUM_FILE):
      table[os.path.relpath(path, step_dir)] = [os.path.getsize(path), _crc32(path)]
  table = dict(sorted(table.items()))
  tmp = os.path.join(step_dir, CHECKSUM_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"algorithm": "crc32", "files": table}, f)
  os.replace(tmp, os.path.join(step_dir, CHECKSUM_FILE))


def verify_checksums(step_dir: str) -> str | None:
  """None if the step matches its checksums (or has none); otherwise what is wrong."""
  path = os.path.join(step_dir, CHECKSUM_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      table = json.load(f)["files"]
  except (OSError, ValueError, KeyError) as e:
    return f"its checksum file is unreadable ({e})"
  for rel, (size, crc) in sorted(table.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.isfile(file):
      return f"{rel} is missing"
    if os.path.getsize(file) != size:
      return f"{rel} has {os.path.getsize(file)} bytes, {size} were written"
    if _crc32(file) != crc:
      return f"{rel} does not match its checksum (corrupted)"
  return None


def _steps_newest_first(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(ocp.utils.checkpoint_steps(directory), reverse=True)


def _set_aside(workdir: str, step: int, reason: str) -> str:
  """Moves a damaged step of WORKDIR/checkpoints to WORKDIR/checkpoints_damaged/ with a
  .reason.txt (process 0); returns where it went."""
  source = os.path.join(workdir, LATEST_DIR, str(step))
  dest = os.path.join(workdir, DAMAGED_DIR, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(source, dest)
    with open(dest + ".reason.txt", "w") as f:
      f.write(reason + "\n")
  return dest


class Checkpointer:
  """Saves training state asynchronously into WORKDIR/checkpoints (the newest `keep` steps and
  the best one)."""

  def __init__(self, workdir: str, keep: int, best_metric: str):
    self.workdir, self.best_metric, self.keep = workdir, best_metric, keep
    # A step whose metrics file is damaged would stop the manager as it opens: set it aside
    # first, as any damaged step is (the resume then starts from the newest intact one).
    for step in _steps_newest_first(os.path.join(workdir, LATEST_DIR)):
      _, problem = step_metrics(os.path.join(workdir, LATEST_DIR, str(step)))
      if problem is None:
        continue
      dest = _set_aside(workdir, step, problem)
      logging.warning("Checkpoint %s is damaged (%s); moved to %s",
                      os.path.join(workdir, LATEST_DIR, str(step)), problem, dest)
    self.latest = _manager(os.path.join(workdir, LATEST_DIR), keep, best_metric)

  def wait(self):
    """Finishes the saves; writes the checksums of finalised steps that have none (process 0)."""
    self.latest.wait_until_finished()
    if jax.process_index() != 0:
      return
    for name in (LATEST_DIR, BEST_DIR):    # checkpoints_best/: a workdir of an earlier version
      directory = os.path.join(self.workdir, name)
      for step in _steps_newest_first(directory):
        step_dir = os.path.join(directory, str(step))
        if not os.path.exists(os.path.join(step_dir, CHECKSUM_FILE)):
          write_checksums(step_dir)

  def save(self, step: int, state, data_state, extra: dict, eval_metrics: dict | None = None):
    # Orbax finishes the previous asynchronous save before it starts this one anyway.
    self.wait()
    # A step saved by a run that resumed from an earlier checkpoint (after a damaged one was set
    # aside) is recomputed: the new save replaces it.
    if step in self.latest.all_steps():
      self.latest.delete(step)
    metrics = None
    if eval_metrics is not None and self.best_metric in eval_metrics:
      metrics = {self.best_metric: float(eval_metrics[self.best_metric])}
    self.latest.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        train=ocp.args.StandardSave({"step": state["step"], "opt_state": state["opt_state"]}),
        # An iterator state of bytes is stored as {"__bytes__": its latin-1 text}.
        data_iter=ocp.args.JsonSave({"state": {"__bytes__": data_state.decode("latin-1")}
                                     if isinstance(data_state, bytes) else data_state}),
        extra=ocp.args.JsonSave(extra)), metrics=metrics, force=True)

  def restore(self, abstract_state) -> tuple[Any, Any, dict]:
    """Restores the newest intact step onto `abstract_state`'s shapes and shardings.

    A step that fails its checksums or cannot be restored is moved to checkpoints_damaged/ with
    a warning, and the step before it is tried.
    """
    failures = []
    while (step := self.latest.latest_step()) is not None:
      path = os.path.join(self.workdir, LATEST_DIR, str(step))
      problem = verify_checksums(path)
      if problem is None:
        try:
          restored = self.latest.restore(step, args=ocp.args.Composite(
              params=ocp.args.StandardRestore(abstract_state["params"]),
              train=ocp.args.StandardRestore({"step": abstract_state["step"],
                                              "opt_state": abstract_state["opt_state"]}),
              data_iter=ocp.args.JsonRestore(),
              extra=ocp.args.JsonRestore()))
        except Exception as e:  # Orbax raises many types; all mean the same to the user.
          problem = f"Orbax cannot restore it: {type(e).__name__}: {str(e)[:300]}"
      if problem is None:
        if failures:
          logging.warning("Resuming from step %d, the newest intact checkpoint", step)
        state = {"step": restored["train"]["step"], "params": restored["params"],
                 "opt_state": restored["train"]["opt_state"]}
        data_state = restored["data_iter"]["state"]
        if isinstance(data_state, dict) and set(data_state) == {"__bytes__"}:
          data_state = data_state["__bytes__"].encode("latin-1")
        return state, data_state, restored["extra"]
      dest = _set_aside(self.workdir, step, problem)
      self.latest.close()   # reopened without the step set aside
      self.latest = _manager(os.path.join(self.workdir, LATEST_DIR), self.keep, self.best_metric)
      logging.warning("Checkpoint %s is damaged (%s); moved to %s", path, problem, dest)
      failures.append(f"{path}: {problem}")
    raise CheckpointError(
        "No intact checkpoint to resume from: " + "; ".join(failures) + ". The damaged ones are "
        f"in {os.path.join(self.workdir, DAMAGED_DIR)}; train into a new --workdir.")

  def close(self):
    self.latest.close()


def _candidates(workdir: str, checkpoint: str) -> list[tuple[str, int]]:
  """(directory, step) pairs to try, preferred first: for "best", the tracked best step (or an
  earlier version's checkpoints_best/), then the newest steps; for "latest", the other way."""
  if checkpoint not in ("best", "latest"):
    raise ValueError(f"checkpoint={checkpoint!r}: expected 'best' or 'latest'")
  latest_dir, best_dir = os.path.join(workdir, LATEST_DIR), os.path.join(workdir, BEST_DIR)
  best = [(latest_dir, step) for step in [tracked_best_step(latest_dir)] if step is not None]
  best += [(best_dir, step) for step in _steps_newest_first(best_dir)]
  latest = [(latest_dir, step) for step in _steps_newest_first(latest_dir)]
  found = list(dict.fromkeys(best + latest if checkpoint == "best" else latest + best))
  if not found:
    raise CheckpointError(f"No checkpoint in workdir {workdir!r} (looked in {LATEST_DIR}/ and "
                          f"{BEST_DIR}/). Train first: python -m xxact_jax.main --workdir=...")
  return found


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
  """Parameters of a trained workdir and what the trainer saved beside them."""
  params: Any
  config: Any            # ml_collections.ConfigDict of the run
  target_stats: dict     # {target: {"mean", "std"}} for de-standardising regression outputs
  step: int
  path: str
  extra: dict            # config, target_stats, data_path, max_elements


def restore_checkpoint(workdir: str, checkpoint: str = "best") -> RestoredCheckpoint:
  """Parameters (no optimiser state) and metadata of a workdir's best or latest checkpoint.

  `checkpoint="best"` falls back to the latest checkpoint when no best one was kept, and vice
  versa; a step that fails its checksums or cannot be read is skipped with a warning (nothing is
  moved: inference only reads).
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  # Arrays saved over devices this process lacks (a bigger mesh, other processes) are read onto
  # one local device instead of failing with Orbax's topology mismatch.
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  failures = []
  for directory, step in _candidates(workdir, checkpoint):
    path = os.path.join(directory, str(step))
    problem = verify_checksums(path)
    if problem is None:
      # lightweight_initialize: Orbax would otherwise read every step's metrics file first, and
      # stop on a damaged one before this step's checksums were looked at.
      mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
          create=False, lightweight_initialize=True))
      try:
        restored = mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(fallback_sharding=local),
            extra=ocp.args.JsonRestore()))
      except Exception as e:  # Orbax raises many types; all mean the same to the user.
        problem = f"{type(e).__name__}: {str(e)[:300]}"
      finally:
        mngr.close()
    if problem is not None:
      logging.warning("Skipping checkpoint %s: %s", path, problem)
      failures.append(f"{path}: {problem}")
      continue
    extra = dict(restored["extra"])
    params = jax.tree.map(np.asarray, restored["params"])
    logging.info("Restored parameters of step %d from %s", step, path)
    config = stored_config.upgrade(ml_collections.ConfigDict(extra["config"]))
    return RestoredCheckpoint(params, config, extra["target_stats"], step, path, extra)
  raise CheckpointError("Cannot restore parameters from any checkpoint: " + "; ".join(failures))


def restore_params(workdir: str, checkpoint: str = "best"):
  """(params, config, target_stats) of a trained workdir, without optimiser state."""
  r = restore_checkpoint(workdir, checkpoint)
  return r.params, r.config, r.target_stats


def config_to_json(config, model_config=None) -> dict:
  """A JSON-safe dict of an ml_collections config (tuples become lists); with `model_config`
  (models/config.py `ModelConfig`) as its `model`, the form a checkpoint stores."""
  result = json.loads(config.to_json_best_effort())
  if model_config is not None:
    result["model"] = json.loads(json.dumps(model_config.to_dict()))
  return result
