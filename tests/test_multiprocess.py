"""The trainer in two real processes (jax.distributed, CPU) against one process with as many devices.

tests/helpers/multiprocess_train.py trains configs/supervised.py:runlocal for a few steps into a
workdir: once as 1 process x 4 fake CPU devices, once as 2 processes x 2 fake CPU devices sharing
one workdir (per-process Grain loaders, process-local batches assembled into global arrays,
cross-process all-reduces over gloo, Orbax checkpoints written by both processes: the latest and
the best one saved together at every step).

The two runs must train the same model: the loader gives every process its contiguous part of each
global batch of one shared per-epoch permutation (xxact_jax/data/loader.py), so a global batch holds
the same rows in the same order for any process count, and with the same mesh size the step is the
same program. Losses therefore agree to float tolerance (the all-reduce may sum in another order);
a loader whose global batch depended on the process count would fail at step 1.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from xxact_jax.data import open_dataset
from xxact_jax.models import build_model
from xxact_jax.training import checkpoints
from xxact_jax.training import optimizer
from xxact_jax.training import sharding
from xxact_jax.training import step as step_lib
from float32_tolerance import RTOL

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers",
                      "multiprocess_train.py")
TIMEOUT_S = 300
TOTAL_DEVICES = 4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _tail(path, chars=4000) -> str:
  with open(path, errors="replace") as f:
    return f.read()[-chars:]


def train_in_processes(workdir: str, num_processes: int, logdir):
  """Runs the helper as `num_processes` processes; fails with each one's stderr unless all exit 0."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs, logs = [], []
  start = time.perf_counter()
  for i in range(num_processes):
    log = str(logdir / f"{num_processes}proc_{i}.stderr")
    logs.append(log)
    with open(log, "w") as err:   # files, not pipes: a full pipe would stall its process
      procs.append(subprocess.Popen(
          [sys.executable, HELPER, f"--workdir={workdir}",
           f"--local_devices={TOTAL_DEVICES // num_processes}",
           f"--num_processes={num_processes}", f"--process_id={i}",
           f"--coordinator=localhost:{port}"],
          stdout=subprocess.DEVNULL, stderr=err, env=env))
  deadline = start + TIMEOUT_S
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(1.0, deadline - time.perf_counter())))
    except subprocess.TimeoutExpired:
      codes.append(f"timed out after {TIMEOUT_S} s")
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  if any(c != 0 for c in codes):
    report = "\n".join(f"--- process {i}: exit {c}; stderr tail:\n{_tail(log)}"
                       for i, (c, log) in enumerate(zip(codes, logs)))
    pytest.fail(f"{num_processes}-process training failed:\n{report}", pytrace=False)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, embedded_dataset):  # pylint: disable=unused-argument
  """(single-process workdir, two-process workdir); the embedded dataset is featurised first."""
  logdir = tmp_path_factory.mktemp("multiprocess_logs")
  single = str(tmp_path_factory.mktemp("one_process"))
  multi = str(tmp_path_factory.mktemp("two_processes"))
  train_in_processes(single, 1, logdir)
  train_in_processes(multi, 2, logdir)
  return single, multi


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_processes_train_like_one(workdirs):
  single, multi = workdirs
  one, two = read_metrics(single), read_metrics(multi)
  train_one = [r for r in one if "loss" in r]
  train_two = [r for r in two if "loss" in r]
  assert [r["step"] for r in train_two] == [r["step"] for r in train_one] == [1, 2, 3, 4, 5, 6]
  for a, b in zip(train_one, train_two):
    for key in sorted(k for k in a if k.startswith("loss")):
      assert b[key] == pytest.approx(a[key], rel=RTOL), (a["step"], key)
  eval_one = [r for r in one if "eval/loss" in r]
  eval_two = [r for r in two if "eval/loss" in r]
  assert [r["step"] for r in eval_two] == [r["step"] for r in eval_one] == [1, 2, 3, 4, 5, 6]
  for a, b in zip(eval_one, eval_two):
    assert b["eval/num_examples"] == a["eval/num_examples"]
    assert b["eval/loss"] == pytest.approx(a["eval/loss"], rel=RTOL), a["step"]


def restore_train_state(workdir):
  """The latest full train state (params, optimiser, data iterator) onto this process's devices."""
  restored = checkpoints.restore_checkpoint(workdir, "latest")
  config = restored.config
  model = build_model(config.model)
  tx, _ = optimizer.make_optimizer(config.optimizer, config.num_train_steps, config.trainable)
  abstract = jax.eval_shape(step_lib.make_init_fn(model, tx, restored.extra["max_elements"]),
                            jax.random.key(0))
  mesh = sharding.make_mesh()
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          abstract, sharding.state_shardings(mesh, abstract))
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints, config.best_metric)
  try:
    state, data_state, _ = ckpt.restore(abstract)
  finally:
    ckpt.close()
  return restored, jax.device_get(state), data_state


@pytest.mark.slow
def test_two_process_checkpoint_is_complete_and_restores(workdirs, embedded_dataset):
  single, multi = workdirs
  # The last 3 steps (keep_checkpoints), none left half-written.
  steps = sorted(os.listdir(os.path.join(multi, checkpoints.LATEST_DIR)), key=int)
  assert steps[-3:] == ["4", "5", "6"]
  best = checkpoints.tracked_best_step(os.path.join(multi, checkpoints.LATEST_DIR))
  assert steps == sorted({"4", "5", "6", str(best)}, key=int)   # the newest 3 and the best
  for name in ("config.json", "target_stats.json"):
    with open(os.path.join(multi, name)) as f:
      json.load(f)   # written whole, once
  assert checkpoints.restore_checkpoint(multi, "best").step == 6
  ref, ref_state, ref_data = restore_train_state(single)
  got, state, data = restore_train_state(multi)
  assert got.step == int(state["step"]) == 6
  assert got.target_stats == ref.target_stats
  jax.tree.map(np.testing.assert_array_equal, got.params, state["params"])
  # The data iterator resumes at the same global batch whatever the process count.
  assert data == ref_data
  scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(ref_state["params"]))
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b), initial=0.0)),
                                       ref_state["opt_state"], state["opt_state"]))
  assert max(diffs) <= 1e-5 * max(1.0, scale)
  # Parameters are compared through the model: attention key biases get no gradient (softmax
  # ignores a shift shared by all keys), so AdamW turns their rounding noise into lr-sized steps
  # that differ between runs without changing any output.
  model = build_model(ref.config.model)
  apply = jax.jit(lambda params, b: model.apply({"params": params}, b["species"], b["fractions"],
                                                b["xrd"], train=False))
  batch = open_dataset(embedded_dataset, "test").read_batch(np.arange(32))
  ref_out, out = apply(ref.params, batch), apply(got.params, batch)
  for key in ref_out:
    np.testing.assert_allclose(out[key], ref_out[key], rtol=1e-4, atol=1e-5, err_msg=key)
