"""Faults injected into training: damaged checkpoints, preemption, a second trainer, a changed config.

Each test reproduces a failure a user met (a corrupted latest checkpoint stopping the run although
the previous one was intact, a flipped bit loading silently, SIGTERM losing the steps since the
last checkpoint, two trainers interleaving one workdir, a resume silently taking another batch
size or seed, replayed rows in metrics.jsonl) and checks the behaviour that replaced it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from xxact_jax.training import checkpoints
from xxact_jax.training import metric_writers
from xxact_jax.training import train

from test_train import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  settings = dict(num_train_steps=6, log_every_steps=1, eval_every_steps=3,
                  checkpoint_every_steps=3, tensorboard=False)
  return load_config("supervised", **{**settings, **overrides})


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in _rows(workdir) if "loss" in r}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, embedded_dataset):
  """A 6-step run with checkpoints at steps 3 and 6, and its final parameters."""
  del embedded_dataset
  workdir = str(tmp_path_factory.mktemp("finished"))
  train.train_and_evaluate(_config(), workdir)
  final = checkpoints.restore_checkpoint(workdir, "latest")
  assert final.step == 6
  return workdir, final.params


def _copy(run, tmp_path, name="copy"):
  workdir = str(tmp_path / name)
  shutil.copytree(run, workdir)
  return workdir


def _largest_param_file(step_dir):
  files = [os.path.join(root, n) for root, _, names in os.walk(os.path.join(step_dir, "params"))
           for n in names]
  return max(files, key=os.path.getsize)


def test_every_finished_step_carries_checksums(finished_run):
  workdir, _ = finished_run
  directory = os.path.join(workdir, checkpoints.LATEST_DIR)
  assert not os.path.exists(os.path.join(workdir, checkpoints.BEST_DIR))   # one manager
  best = checkpoints.tracked_best_step(directory)
  assert best is not None
  for s in {"3", "6", str(best)}:
    assert os.path.exists(os.path.join(directory, s, checkpoints.CHECKSUM_FILE)), s
    assert checkpoints.verify_checksums(os.path.join(directory, s)) is None


def test_flipped_bit_is_detected_and_the_run_resumes_from_the_intact_step(finished_run,
                                                                          tmp_path):
  run, final_params = finished_run
  workdir = _copy(run, tmp_path)
  losses_before = _losses(workdir)
  step6 = os.path.join(workdir, checkpoints.LATEST_DIR, "6")
  victim = _largest_param_file(step6)
  with open(victim, "r+b") as f:         # one bit, in the middle of the array data
    f.seek(os.path.getsize(victim) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x10]))
  assert "corrupted" in checkpoints.verify_checksums(step6)

  # Inference skips the damaged step (and reads the best one, or step 3), without moving anything.
  restored = checkpoints.restore_checkpoint(workdir, "latest")
  assert restored.step != 6 or restored.path != step6
  assert os.path.isdir(step6)

  # The trainer falls back to step 3, keeps step 6 aside and recomputes steps 4-6 exactly.
  train.train_and_evaluate(_config(), workdir)
  damaged = os.listdir(os.path.join(workdir, checkpoints.DAMAGED_DIR))
  assert any(d.startswith("6-") and not d.endswith(".txt") for d in damaged)
  rows = [r for r in _rows(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6], "replayed rows were not dropped"
  for r in rows:
    assert r["loss"] == pytest.approx(losses_before[r["step"]], rel=1e-6, abs=1e-7)
  again = checkpoints.restore_checkpoint(workdir, "latest")
  assert again.step == 6
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(final_params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_truncated_latest_checkpoint_falls_back_to_the_previous_step(finished_run, tmp_path):
  run, _ = finished_run
  workdir = _copy(run, tmp_path)
  victim = _largest_param_file(os.path.join(workdir, checkpoints.LATEST_DIR, "6"))
  with open(victim, "r+b") as f:
    f.truncate(8)
  config = _config(num_train_steps=8, resume_allow_changes=True)
  train.train_and_evaluate(config, workdir)
  steps = [r["step"] for r in _rows(workdir) if "loss" in r]
  assert steps == list(range(1, 9))
  assert checkpoints.restore_checkpoint(workdir, "latest").step == 8


@pytest.mark.parametrize("step, garble", [(6, b'{"eval/lo'), (3, b"\x00\x00\x00")])
def test_damaged_metrics_file_is_set_aside_like_any_damaged_step(finished_run, tmp_path, step,
                                                                 garble):
  # Orbax reads every step's metrics/metrics when a manager opens: a truncated (step 6, the
  # latest) or garbled (step 3) one stopped resume and predict with "Expecting value".
  run, _ = finished_run
  workdir = _copy(run, tmp_path)
  directory = os.path.join(workdir, checkpoints.LATEST_DIR)
  with open(os.path.join(directory, str(step), checkpoints.METRICS_FILE), "wb") as f:
    f.write(garble)
  assert checkpoints.tracked_best_step(directory) == 9 - step     # the other one
  for which in ("best", "latest"):
    restored = checkpoints.restore_checkpoint(workdir, which)      # inference: skips, moves none
    assert restored.step == 9 - step
  assert os.path.isdir(os.path.join(directory, str(step)))
  train.train_and_evaluate(_config(), workdir)                    # resumes (or has nothing to do)
  damaged = os.listdir(os.path.join(workdir, checkpoints.DAMAGED_DIR))
  assert any(d.startswith(f"{step}-") and d.endswith(".reason.txt") for d in damaged)
  reason = next(d for d in damaged if d.endswith(".reason.txt"))
  with open(os.path.join(workdir, checkpoints.DAMAGED_DIR, reason)) as f:
    assert "metrics/metrics is unreadable" in f.read()
  assert checkpoints.restore_checkpoint(workdir, "latest").step == 6
  assert [r["step"] for r in _rows(workdir) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_resume_with_another_training_config_is_refused_with_the_differences(finished_run,
                                                                             tmp_path):
  run, _ = finished_run
  workdir = _copy(run, tmp_path)
  with open(os.path.join(workdir, "config.json")) as f:
    before = f.read()
  changed = _config(seed=1, global_batch_size=32, num_train_steps=8)
  with pytest.raises(ValueError, match="another training config") as e:
    train.train_and_evaluate(changed, workdir)
  for named in ("seed: 0 there, 1 now", "global_batch_size: 16 there, 32 now",
                "num_train_steps: 6 there, 8 now"):
    assert named in str(e.value)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == before
  # Cadence changes are not training changes; an explicit allowance continues with new values.
  train.train_and_evaluate(_config(log_every_steps=2, eval_every_steps=6), workdir)
  train.train_and_evaluate(_config(num_train_steps=7, resume_allow_changes=True), workdir)
  assert checkpoints.restore_checkpoint(workdir, "latest").step == 7
  # eval_every_steps=3 does not divide 7: steps 3, 6 and the last, each evaluated once.
  assert [r["step"] for r in _rows(workdir) if "eval/loss" in r] == [3, 6, 7]


def test_second_trainer_on_a_locked_workdir_is_refused(finished_run, tmp_path):
  run, _ = finished_run
  workdir = _copy(run, tmp_path)
  rows = len(_rows(workdir))
  with train.workdir_lock(workdir):       # as a first trainer holds it
    with pytest.raises(train.WorkdirInUseError, match=f"pid {os.getpid()}"):
      train.train_and_evaluate(_config(num_train_steps=8, resume_allow_changes=True), workdir)
  assert len(_rows(workdir)) == rows
  # Released with its holder: the next trainer runs.
  train.train_and_evaluate(_config(num_train_steps=7, resume_allow_changes=True), workdir)


def test_metrics_rows_after_the_restored_step_are_dropped(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    for step in (1, 2, 3, 4):
      f.write(json.dumps({"step": step, "loss": float(step)}) + "\n")
    f.write('{"step": 5, "lo')           # cut short by a SIGKILL
  assert metric_writers.drop_rows_after(path, 2) == 3
  with open(path) as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2]


def _main(workdir, steps=40):
  return [sys.executable, "-m", "xxact_jax.main", "--config=configs/supervised.py:runlocal",
          f"--workdir={workdir}", f"--config.num_train_steps={steps}",
          "--config.log_every_steps=1", "--config.checkpoint_every_steps=1000",
          "--config.eval_every_steps=1000", "--config.global_batch_size=16",
          "--config.tensorboard=False"]


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_resumes_exactly(tmp_path, embedded_dataset):
  del embedded_dataset
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jit_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  reference, stopped = str(tmp_path / "reference"), str(tmp_path / "stopped")
  subprocess.run(_main(reference), cwd=REPO, env=env, check=True, capture_output=True)

  proc = subprocess.Popen(_main(stopped), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(stopped, "metrics.jsonl")
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline:
    if os.path.exists(metrics) and len(_rows(stopped)) >= 5:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert "Stopped by SIGTERM at step" in stderr
  step = int(stderr.split("Stopped by SIGTERM at step ")[1].split(";")[0])
  assert 5 <= step < 40, "the run finished before it could be stopped"
  # No checkpoint was due (every 1000 steps): the one there was written on SIGTERM.
  saved = os.listdir(os.path.join(stopped, checkpoints.LATEST_DIR))
  assert str(step) in saved, saved

  subprocess.run(_main(stopped), cwd=REPO, env=env, check=True, capture_output=True)
  expected = _losses(reference)
  rows = [r for r in _rows(stopped) if "loss" in r]
  assert [r["step"] for r in rows] == list(range(1, 41))
  for r in rows:
    assert r["loss"] == pytest.approx(expected[r["step"]], rel=1e-6, abs=1e-7), r["step"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_main_with_grain_workers_leaves_no_orphans(tmp_path, embedded_dataset):
  # Grain's workers and multiprocessing's resource tracker used to live on (reparented to PID 1)
  # and keep stdout open, so that `main ... | tee log` never ended. SIGTERM was always clean.
  from test_faults_prepare import _session_processes  # pylint: disable=g-import-not-at-top
  del embedded_dataset   # featurised in the default cache, which main reads
  process = subprocess.Popen(
      [sys.executable, "-m", "xxact_jax.main", "--config=configs/supervised.py:runlocal",
       f"--workdir={tmp_path}/workdir", "--config.data.worker_count=2",
       "--config.num_train_steps=100000"], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.monotonic() + 50
    while len([p for p in _session_processes(process.pid)
               if p[1] == process.pid and "spawn_main" in p[2]]) < 2:
      assert process.poll() is None, process.stdout.read().decode()[-3000:]
      assert time.monotonic() < deadline, "the Grain workers did not start"
      time.sleep(0.1)
    time.sleep(1.0)   # let them import and run their initializer
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while _session_processes(process.pid) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert _session_processes(process.pid) == []   # workers and the resource tracker
    os.set_blocking(process.stdout.fileno(), False)
    process.stdout.read()
    assert process.stdout.read() == b""   # EOF: nobody holds the pipe, `| tee` would end
  finally:
    for pid, _, _ in _session_processes(process.pid):
      os.kill(pid, signal.SIGKILL)
    process.stdout.close()


def test_rerunning_a_finished_run_says_so_before_compiling(finished_run, tmp_path, caplog):
  import logging as logging_std  # pylint: disable=g-import-not-at-top
  run, _ = finished_run
  workdir = _copy(run, tmp_path)
  rows_before = _rows(workdir)
  with caplog.at_level(logging_std.INFO):
    assert train.train_and_evaluate(_config(), workdir) == {}
  assert "already trained to step 6 of 6: nothing to do" in caplog.text
  assert "compiled" not in caplog.text          # the train step was compiled for nothing (15 s)
  assert "Parameters:" not in caplog.text       # and the 70-line table printed again
  assert _rows(workdir) == rows_before


def test_next_steps_name_the_dataset_the_run_trained_on(embedded_dataset, tmp_path):
  from xxact_jax import main  # pylint: disable=g-import-not-at-top
  config = _config()
  config.data.path = ""
  text = main.next_steps(str(tmp_path), config)
  assert f"--data={embedded_dataset}" in text and "DATASET" not in text
  assert f"--output={tmp_path / 'eval'}" in text
  config.data.path = "/data/mp36k"
  assert "--data=/data/mp36k " in main.next_steps(str(tmp_path), config)


def test_the_tpu_probe_is_not_printed_by_the_command_line_tools():
  import logging as logging_std  # pylint: disable=g-import-not-at-top
  from xxact_jax import cli  # pylint: disable=g-import-not-at-top

  def record(name, level, message, path="/x/jax/_src/xla_bridge.py"):
    return logging_std.LogRecord(name, level, path, 1, message, None, None)

  quiet = cli.QuietLibraries()
  assert not quiet.filter(record("jax._src.xla_bridge", logging_std.INFO,
                                 "Unable to initialize backend 'tpu': INTERNAL: Failed to open "
                                 "libtpu.so"))
  assert not quiet.filter(record("absl", logging_std.INFO, "saved", "/y/orbax/checkpoint.py"))
  assert quiet.filter(record("jax._src.xla_bridge", logging_std.WARNING,
                             "Unable to initialize backend 'cuda'"))
  assert quiet.filter(record("absl", logging_std.INFO, "eval step 10: loss=1.2", "/y/train.py"))


def test_report_figures_do_not_hide_their_data(tmp_path, monkeypatch):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from xxact_jax.report import plots  # pylint: disable=g-import-not-at-top
  steps = np.array([10, 20, 30])
  lines = {"cubic": (steps, np.array([0.2, 0.5, 0.7])), "triclinic": (steps, np.zeros(3)),
           "monoclinic": (steps, np.zeros(3)), "trigonal": (steps, np.zeros(3))}
  merged = plots.merge_identical_series(lines)   # three classes at 0 % drew over each other
  assert list(merged) == ["cubic", "triclinic = monoclinic = trigonal"]
  np.testing.assert_array_equal(merged["triclinic = monoclinic = trigonal"][1], np.zeros(3))
  plots.plot_learning_curves({"eval/crystal_system_accuracy": lines},
                             str(tmp_path / "curves.png"))
  # The PCA legend sits beside the axes, not over the points.
  rng = np.random.default_rng(0)
  import matplotlib.figure  # pylint: disable=g-import-not-at-top
  made = []
  original = matplotlib.figure.Figure.savefig

  def keep(figure, *args, **kwargs):
    made.append(figure)
    return original(figure, *args, **kwargs)

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
  plots.plot_pca(rng.normal(size=(300, 2)), rng.integers(0, 7, 300), [
      "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal",
      "cubic"], np.array([0.3, 0.2]), str(tmp_path / "pca.png"))
  (figure,) = made
  ax = figure.axes[0]
  renderer = FigureCanvasAgg(figure).get_renderer()
  legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
  assert legend.x0 >= axes.x1
