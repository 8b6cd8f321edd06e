"""train_and_evaluate(config, workdir): the one trainer for every experiment of the paper.

Data-parallel over all devices of all processes: parameters replicated (or FSDP-sharded), the batch
sharded along the `data` axis, the step a pure jitted function with explicit shardings and donated
state. The host never waits on the step it just launched: batches are staged on device ahead of time
and metrics are read one step late.
"""

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import threading
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax import data as data_lib
from xxact_jax.data import structures as structures_lib
from xxact_jax import stored_config
from xxact_jax.models import parameter_count
from xxact_jax.training import checkpoints as ckpt_lib
from xxact_jax.training import defaults
from xxact_jax.training import eval_loop as eval_lib
from xxact_jax.training import flops as flops_lib
from xxact_jax.training import metric_writers
from xxact_jax.training import setup as setup_lib
from xxact_jax.training import sharding as sharding_lib
from xxact_jax.training import step as step_lib


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT stopped training after a checkpoint of the current step was written."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step = signum, step
    super().__init__(f"Stopped by {signal.Signals(signum).name} at step {step}; a checkpoint of "
                     f"that step is in {workdir}. Run the same command again to resume.")


class WorkdirInUseError(ValueError):
  """Another trainer holds the workdir's lock."""


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """An exclusive lock on WORKDIR/.lock for the run (process 0 takes it).

  A second trainer on the same workdir is refused instead of interleaving checkpoints and
  metrics. The operating system drops the lock when its process dies, so a killed run leaves no
  stale lock behind.
  """
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, ".lock")
  f = open(path, "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise WorkdirInUseError(f"Workdir {workdir!r} is in use by another trainer ({holder}); "
                            "wait for it to finish or use a new --workdir.") from None
  try:
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


class StopSignals:
  """Records SIGTERM/SIGINT (what SLURM and Ctrl-C send) while installed, instead of dying.

  The train loop checks `agreed` after each step, checkpoints that step and stops. A second
  signal of the same kind while the checkpoint is written is ignored. Under jax.distributed with
  its preemption service, SIGTERM is left to that service (it catches it itself), which picks the
  step every process stops at.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}
    # JAX's preemption service runs with several processes (jax.distributed), unless
    # jax_enable_preemption_service is off; a single process never asks it.
    self.preemption_service = (jax.process_count() > 1
                               and bool(jax.config.jax_enable_preemption_service))

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      logging.warning("Received %s: stopping after this step with a checkpoint",
                      signal.Signals(signum).name)
      self.received = signum

  def agreed(self, step: int, every: int) -> int | None:
    """The signal to stop on after `step`, the same in every process; None to go on.

    One process stops at once. Several must stop at the same step (the step is a collective):
    a preemption notice reaches every process through JAX's preemption sync point, which they
    ask every step; other signals are compared every `every` steps, where the host waits for the
    step's metrics anyway, and they stop together at the first such step after any got one.
    """
    # Orbax's guard of JAX's sync point: False where the service is off.
    if self.preemption_service and ocp.utils.reached_preemption(step):
      logging.warning("Preemption notice: every process stops after step %d", step)
      return signal.SIGTERM
    if jax.process_count() == 1:
      return self.received
    if step % every:
      return None
    signals = multihost_utils.process_allgather(np.int32(self.received or 0))
    return int(np.max(signals)) or None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        if not (sig == signal.SIGTERM and self.preemption_service):
          self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def open_splits(config):
  """The train and eval datasets, with a clear error when the configured path holds none."""
  path = config.data.path or data_lib.default_dataset_path()
  try:
    train = data_lib.open_dataset(path, split=config.data.train_split)
    evaluation = data_lib.open_dataset(path, split=config.data.eval_split)
  except (FileNotFoundError, OSError, ValueError, KeyError) as e:
    raise FileNotFoundError(
        f"config.data.path={path!r}: cannot open a prepared dataset there ({e}). "
        "Create one with: python -m xxact_jax.prepare --input=... --output=DIR") from e
  if len(train) == 0:
    raise ValueError(f"The {config.data.train_split!r} split of {path!r} is empty")
  if config.data.train_fraction != 1.0:
    # Regression targets keep the whole split's standardisation (dataset metadata).
    train = train.fraction(config.data.train_fraction, seed=config.data.fraction_seed)
  extra = [p.strip() for p in config.data.extra_train.split(",") if p.strip()]
  if extra:
    # All valid rows of each extra dataset join the training rows; the evaluation split and the
    # regression targets' standardisation stay those of config.data.path.
    parts = [train]
    for extra_path in extra:
      try:
        parts.append(data_lib.open_dataset(extra_path))
      except (FileNotFoundError, OSError, ValueError, KeyError) as e:
        raise FileNotFoundError(f"config.data.extra_train: cannot open a prepared dataset at "
                                f"{extra_path!r} ({e})") from e
    train = data_lib.ConcatDataset(parts)
  return path, train, evaluation


def target_statistics(metadata: dict, targets, path: str) -> dict:
  """Mean/std of each regression target over the train split; errors for unlabelled targets."""
  stats = metadata.get("label_stats", {})
  result = {}
  for t in targets_lib.check_names(targets):
    count = stats.get(t, {}).get("count", 0)
    if not count:
      raise ValueError(f"Target {t!r} has no labels in the train split of the dataset at "
                       f"{path!r}; choose targets it has (config.targets)")
    if t in constants.REGRESSION_TARGETS:
      std = stats[t]["std"]
      result[t] = {"mean": float(stats[t]["mean"]),
                   "std": float(std) if std and math.isfinite(std) and std > 0 else 1.0}
  return result


def _differences(a, b, prefix="") -> list[tuple[str, Any, Any]]:
  """(dotted key, value in a, value in b) for every leaf where two nested dicts differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    found = []
    for k in sorted(set(a) | set(b)):
      found.extend(_differences(a.get(k), b.get(k), f"{prefix}{k}."))
    return found
  return [] if a == b else [(prefix.rstrip("."), a, b)]


# Config fields that may change between a run and its resumption: how often it logs, evaluates
# and checkpoints, and how it reads data, none of which changes the parameters it computes.
RESUMABLE_CHANGES = ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                     "keep_checkpoints", "tensorboard", "xla_fast_compile", "eval_batch_size",
                     "data.worker_count", "data.prefetch", "resume_allow_changes", "config_arg")


def check_workdir(config, model_config, workdir: str):
  """A workdir that already holds a run must hold this run, to be resumed.

  A different model is always refused. Any other difference in the training-defining config
  (batch size, seed, steps, data, optimiser, ...) is refused with the list of differences unless
  `config.resume_allow_changes`. Every process checks; process 0 alone writes, as processes share
  the workdir.
  """
  path = os.path.join(workdir, "config.json")
  new = ckpt_lib.config_to_json(config, model_config)
  if os.path.exists(path):
    with open(path) as f:
      old = json.loads(json.dumps(stored_config.upgrade(json.load(f))))
    diffs = _differences(old.get("model", {}), new["model"], "model.")
    if diffs:
      key, there, now = diffs[0]
      raise ValueError(
          f"Workdir {workdir!r} holds a run of a different model ({key}: {there!r} there, "
          f"{now!r} now). Nothing was changed; use a new --workdir.")
    diffs = [d for d in _differences(old, new)
             if not any(d[0] == k or d[0].startswith(k + ".") for k in RESUMABLE_CHANGES)]
    if diffs:
      listed = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in diffs)
      if not config.resume_allow_changes:
        raise ValueError(
            f"Workdir {workdir!r} holds a run with another training config ({listed}). Nothing "
            "was changed; rerun with the same config to resume, use a new --workdir, or pass "
            "--config.resume_allow_changes=True to continue with the new values.")
      logging.warning("Resuming %s with a changed config (allowed): %s", workdir, listed)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(new, f, indent=2)
    os.replace(tmp, path)


def merge_pretrained(params, pretrained, exclude=()):
  """Takes every pretrained array whose path and shape match, outside `exclude` collections.

  Returns (merged params, number of arrays taken, paths of the arrays left as initialised).
  """
  keystr = jax.tree_util.keystr
  pre = {keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(pretrained)[0]}
  taken, fresh = [], []

  def take(path, leaf):
    key = keystr(path)
    if path[0].key not in exclude and key in pre and pre[key].shape == leaf.shape:
      taken.append(key)
      return np.asarray(pre[key], dtype=leaf.dtype)
    fresh.append(key)
    return leaf

  merged = jax.tree_util.tree_map_with_path(take, params)
  if not taken:
    raise ValueError("The pretrained checkpoint shares no parameter (name and shape) with this "
                     "model; check config.init_from and the model config")
  return merged, len(taken), fresh


def train_and_evaluate(config, workdir: str):
  """Trains `config` into `workdir`, resuming from its latest checkpoint; returns final eval metrics."""
  sharding_lib.maybe_initialize_distributed()
  model_config = defaults.model_of(config)
  data_path, ds_train, ds_eval = open_splits(config)
  target_stats = target_statistics(ds_train.metadata, config.targets, data_path)
  scattering = scattering_parameters(config, ds_train, data_path)
  if config.global_batch_size > len(ds_train):
    raise ValueError(
        f"global_batch_size={config.global_batch_size} exceeds the {len(ds_train)} examples of the "
        f"{config.data.train_split!r} split of {data_path!r}. Point --config.data.path at a prepared "
        "dataset (python -m xxact_jax.prepare) or lower --config.global_batch_size.")
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock(workdir):
    check_workdir(config, model_config, workdir)
    return _train(config, model_config, workdir, data_path, ds_train, ds_eval, target_stats,
                  scattering)


def scattering_parameters(config, ds_train, data_path: str):
  """The training data's atomic scattering parameters with data.xrd_source="simulated" (None
  otherwise); a clear error when it stores no structures."""
  if not step_lib.simulates_xrd(config):
    return None
  if not ds_train.has_structures:
    extra = f", {config.data.extra_train}" if config.data.extra_train else ""
    raise ValueError(
        f'data.xrd_source="simulated" needs stored crystal structures, and the training data '
        f"({data_path!r}{extra}) holds none: prepare it with --store_structures, or use "
        f'data.xrd_source="stored"')
  return structures_lib.coefficient_table(ds_train.metadata)


def _train(config, model_config, workdir, data_path, ds_train, ds_eval, target_stats,
           scattering):
  """The body of `train_and_evaluate`, once the inputs are checked and the workdir is locked."""
  max_elements = int(ds_train.metadata["max_elements"])

  mesh = sharding_lib.make_mesh()
  sharding_lib.check_batch_divisible(config.global_batch_size, mesh, config.grad_accum_steps)
  sharding_lib.check_batch_divisible(config.eval_batch_size, mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  total_steps = int(config.num_train_steps) if config.num_train_steps > 0 else max(
      1, int(config.num_epochs * len(ds_train) // config.global_batch_size))

  trainer = setup_lib.create_train_state(config, model_config, mesh, max_elements, target_stats,
                                         total_steps, scattering)
  model, tx, state_shardings = trainer.model, trainer.tx, trainer.shardings
  logging.info("Model %s: %.2f M parameters; %d train / %d eval examples; %d steps of %d",
               config.model.name, trainer.num_params / 1e6, len(ds_train), len(ds_eval),
               total_steps, config.global_batch_size)

  checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints, config.best_metric)
  data_state = None
  if checkpointer.latest.latest_step() is not None:
    state, data_state, extra = checkpointer.restore(trainer.abstract_with_shardings())
    target_stats = extra.get("target_stats", target_stats)
    logging.info("Resumed from %s at step %d", workdir, int(state["step"]))
  else:
    state = trainer.init(jax.random.key(config.seed))
    if config.init_from:
      pretrained, _, _ = ckpt_lib.restore_params(config.init_from, config.init_checkpoint)
      params, loaded, skipped = merge_pretrained(jax.device_get(state["params"]), pretrained,
                                                 tuple(config.init_exclude))
      logging.info("Initialised %d arrays from %s; %d fresh: %s", loaded, config.init_from,
                   len(skipped), ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else ""))
      params = jax.device_put(params, state_shardings["params"])
      opt_state = jax.jit(tx.init, out_shardings=state_shardings["opt_state"])(params)
      state = dict(state, params=params, opt_state=opt_state)
  extra = {"config": ckpt_lib.config_to_json(config, model_config), "target_stats": target_stats,
           "data_path": data_path, "max_elements": max_elements}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "target_stats.json"), "w") as f:
      json.dump(target_stats, f, indent=2)

  train_step = trainer.train_step
  eval_step = jax.jit(step_lib.make_eval_step(model, config, target_stats),
                      in_shardings=(state_shardings["params"], batch_sharding))

  all_finite = jax.jit(lambda tree: jax.tree.reduce(
      lambda a, b: a & b, jax.tree.map(lambda x: jax.numpy.isfinite(x).all(), tree)))

  def require_finite_params(params, step):
    """Raises before a checkpoint of NaN or Inf parameters replaces a good one."""
    if not bool(all_finite(params)):
      raise NonFiniteLossError(f"Parameters became NaN or Inf at step {step}; stopping. The "
                               f"last good checkpoint in {workdir} is kept.")

  start_step = int(state["step"])
  if start_step >= total_steps:
    # Said before the step is compiled (15 s) or the parameter table is printed again.
    logging.info("%s is already trained to step %d of %d: nothing to do (a larger "
                 "--config.num_train_steps with --config.resume_allow_changes=True continues "
                 "it; another --workdir starts afresh)",
                 workdir, start_step, total_steps)
    checkpointer.close()
    return {}
  logging.info("Parameters:\n%s", parameter_count.parameter_table(trainer.abstract_state["params"]))
  # Rows past the restored step were written by the run that died after it: they are replayed now.
  writer = metric_writers.MetricWriter(workdir, config.tensorboard, resume_step=start_step)
  batches = setup_lib.TrainBatches(config, ds_train, batch_sharding, data_state)

  t0 = time.perf_counter()
  compiled = train_step.lower(state, batches.peek()[1]).compile()
  compile_seconds = time.perf_counter() - t0
  step_flops = flops_lib.step_flops_per_device(train_step, (state, batches.peek()[1]),
                                               jax.device_count())
  peak = flops_lib.peak_flops_per_device(jax.devices()[0])
  logging.info("Train step compiled in %.1f s; %.3g GFLOP per step per device", compile_seconds,
               (step_flops or float("nan")) / 1e9)

  rates = metric_writers.RateTracker(start_step, total_steps, config.global_batch_size)
  previous = None          # (step, device metrics) of the step before the one in flight

  def log(step, device_metrics):
    """Writes a step's metrics; raises on a non-finite loss."""
    m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    if not math.isfinite(m["loss"]):
      raise NonFiniteLossError(
          f"Loss is {m['loss']} at step {step}; stopping. The last good checkpoint in "
          f"{os.path.join(workdir, ckpt_lib.LATEST_DIR)} is kept; lower the learning rate or "
          "check the data.")
    m.update(rates.update(step))
    if step_flops and peak:
      m["mfu"] = step_flops * m["steps_per_sec"] / peak   # both per device
    writer.write(step, m)
    metric_writers.log_console(step, total_steps, m)

  eval_metrics = {}
  stop = StopSignals()
  try:
    stop.__enter__()
    for step in range(start_step + 1, total_steps + 1):
      state, metrics = compiled(state, batches.take())
      batches.refill()                 # reads the next batch while the device computes
      if previous is not None and previous[0] % config.log_every_steps == 0:
        log(*previous)
      previous = (step, metrics)
      is_last = step == total_steps
      do_eval = step % config.eval_every_steps == 0 or is_last
      do_ckpt = step % config.checkpoint_every_steps == 0 or is_last
      if do_eval or do_ckpt:
        if step % config.log_every_steps == 0 or is_last:
          log(*previous)
        else:   # not a log step: still never evaluate or checkpoint after a non-finite loss
          loss = float(jax.device_get(metrics["loss"]))
          if not math.isfinite(loss):
            raise NonFiniteLossError(f"Loss is {loss} at step {step}; stopping. The last good "
                                     f"checkpoint in {workdir} is kept.")
        if do_ckpt:
          require_finite_params(state["params"], step)
        previous = None
        eval_metrics = {}
        if do_eval:
          eval_metrics = eval_lib.evaluate(eval_step, state["params"], ds_eval, config, mesh)
          writer.write(step, eval_metrics)
          logging.info("eval step %d: %s", step, ", ".join(
              f"{k[5:]}={v:.4g}" for k, v in eval_metrics.items()
              if "/" not in k[5:] or k.startswith("eval/loss")))
        if do_ckpt:
          checkpointer.save(step, state, batches.peek()[0], extra, eval_metrics or None)
        writer.flush()
        rates.update(step)   # evaluation and checkpointing are not training time
      signum = stop.agreed(step, config.log_every_steps)
      if signum is not None:
        if not do_ckpt:
          if previous is not None:
            log(*previous)
          require_finite_params(state["params"], step)
          checkpointer.save(step, state, batches.peek()[0], extra)
        raise Interrupted(signum, step, workdir)
    if previous is not None and previous[0] % config.log_every_steps == 0:
      log(*previous)
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    stop.__exit__(None, None, None)
  return eval_metrics
