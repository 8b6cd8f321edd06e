"""Metrics to WORKDIR/metrics.jsonl, TensorBoard event files (tensorboardX, no TensorFlow) and the log."""

import json
import math
import os
import time

from absl import logging
import jax


class MetricWriter:
  """Writes on process 0 only; every other process gets a writer that does nothing."""

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int | None = None):
    """`resume_step`: drop rows of metrics.jsonl after this step (a resumed run rewrites them)."""
    self.active = jax.process_index() == 0
    self._jsonl = self._tb = None
    if not self.active:
      return
    path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None:
      drop_rows_after(path, resume_step)
    self._jsonl = open(path, "a", buffering=1)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict):
    if not self.active:
      return
    clean = {k: (float(v) if not isinstance(v, (str, int)) else v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        if isinstance(v, float) and math.isfinite(v):
          self._tb.add_scalar(k, v, step)

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def drop_rows_after(path: str, step: int) -> int:
  """Rewrites a metrics.jsonl without its rows past `step` (and a half-written last line);
  returns how many were dropped."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue                  # a line cut short when the process died
    if row.get("step", 0) <= step:
      kept.append(json.dumps(row) + "\n")
  if len(kept) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return len(lines) - len(kept)


class RateTracker:
  """Steps/s, samples/s and ETA between logged steps."""

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self.total, self.batch = total_steps, batch_size
    self._step, self._time = start_step, time.perf_counter()

  def update(self, step: int) -> dict:
    now = time.perf_counter()
    dt = max(now - self._time, 1e-9)
    steps_per_sec = (step - self._step) / dt
    self._step, self._time = step, now
    remaining = (self.total - step) / max(steps_per_sec, 1e-9)
    return {"steps_per_sec": steps_per_sec, "samples_per_sec": steps_per_sec * self.batch,
            "eta_seconds": remaining}


def log_console(step: int, total: int, metrics: dict):
  eta = metrics.get("eta_seconds", float("nan"))
  eta_s = (time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) and eta < 86400 * 30
           else "?")
  keys = [k for k in ("loss", "mxm_loss", "contrastive_loss") if k in metrics]
  parts = [f"{k}={metrics[k]:.4g}" for k in keys]
  parts.append(f"lr={metrics.get('learning_rate', float('nan')):.3g}")
  if "samples_per_sec" in metrics:
    parts.append(f"{metrics['steps_per_sec']:.2f} steps/s {metrics['samples_per_sec']:.0f} samples/s")
  if "mfu" in metrics:
    parts.append(f"MFU={100 * metrics['mfu']:.1f}%")
  logging.info("%s", f"step {step}/{total} ({100 * step / max(total, 1):.1f}%) "
               + " ".join(parts) + f" ETA {eta_s}")
