"""The trainer end to end on the embedded data: every config, resume, fine-tuning, bad input."""

import glob
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
from xxact_jax.training import defaults
from xxact_jax.training import train

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name, arg="runlocal", **overrides):
  config = defaults.load_config_file(os.path.join(CONFIGS, f"{name}.py"), arg)
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.global_batch_size = 16
  config.eval_batch_size = 64
  for key, value in overrides.items():
    target = config
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, embedded_dataset):
  workdir = str(tmp_path_factory.mktemp("mxm_contrastive"))
  config = load_config("mxm_contrastive", num_train_steps=6, checkpoint_every_steps=3,
                       eval_every_steps=3)
  metrics = train.train_and_evaluate(config, workdir)
  return workdir, metrics


def check_run(workdir, metrics, config):
  """What a finished run leaves: its train rows at the log steps, an eval row at each eval step
  (the last one is what train_and_evaluate returned), and a latest checkpoint at the last step
  with the heads of the objective, restorable with its typed model config."""
  steps = config.num_train_steps
  rows = read_metrics(workdir)
  assert [r["step"] for r in rows if "loss" in r] == list(
      range(config.log_every_steps, steps + 1, config.log_every_steps))
  assert all({"loss", "learning_rate", "steps_per_sec", "samples_per_sec"} <= set(r)
             for r in rows if "loss" in r)
  evals = [r for r in rows if "eval/loss" in r]
  assert [r["step"] for r in evals] == list(
      range(config.eval_every_steps, steps + 1, config.eval_every_steps))
  assert all(np.isfinite(r["eval/loss"]) for r in evals)
  assert {k: v for k, v in evals[-1].items() if k != "step"} == pytest.approx(metrics)
  expected = {f"eval/{t}_{'mae_meV' if t == 'formation_energy_per_atom' else 'accuracy'}"
              for t in config.targets if t in ("formation_energy_per_atom", "crystal_system")}
  if "mxm" in config.objective:
    expected.add("eval/mxm_loss")
  if "contrastive" in config.objective:
    expected |= {"eval/contrastive_loss", "eval/retrieval_accuracy"}
  assert expected <= set(metrics), sorted(metrics)
  restored = checkpoints.restore_checkpoint(workdir, "latest")
  assert restored.step == steps
  heads = set(restored.params["heads"])
  model = restored.config.model
  assert (set(config.targets) <= heads and model.mxm == ("mxm" in heads)
          and model.contrastive == ("logit_scale" in heads))
  assert (model.mxm, model.contrastive) == ("mxm" in config.objective,
                                            "contrastive" in config.objective)


def test_pretraining_writes_metrics_and_checkpoints(pretrained):
  workdir, metrics = pretrained
  config = load_config("mxm_contrastive", num_train_steps=6, checkpoint_every_steps=3,
                       eval_every_steps=3)
  check_run(workdir, metrics, config)
  assert sorted(os.listdir(os.path.join(workdir, checkpoints.LATEST_DIR))) == ["3", "6"]
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  # The best checkpoint is the step with the lowest eval loss.
  evals = {r["step"]: r["eval/loss"] for r in read_metrics(workdir) if "eval/loss" in r}
  assert checkpoints.restore_checkpoint(workdir, "best").step == min(evals, key=evals.get)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["supervised", "mxm", "contrastive", "crabnet",
                                  "xrd_transformer", "pxrd_fcn", "pxrd_fcn_mlp"])
def test_config_runs_runlocal(name, tmp_path, embedded_dataset):
  config = load_config(name)
  metrics = train.train_and_evaluate(config, str(tmp_path))
  check_run(str(tmp_path), metrics, config)
  if name not in ("mxm", "contrastive"):
    assert 0.0 <= metrics["eval/crystal_system_accuracy"] <= 1.0
    assert metrics["eval/formation_energy_per_atom_mae_meV"] > 0
    assert set(f"eval/crystal_system_accuracy/{c}" for c in
               ("triclinic", "cubic")) <= set(metrics)


def test_supervised_loss_falls(tmp_path, embedded_dataset):
  config = load_config("supervised", num_train_steps=80, log_every_steps=10, eval_every_steps=40,
                       checkpoint_every_steps=40, global_batch_size=64)
  config.task_sampling = "all"   # the sum of both targets' losses: less noisy to compare
  train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in read_metrics(str(tmp_path)) if "loss" in r]
  first, last = rows[0]["loss"], np.mean([r["loss"] for r in rows[-3:]])
  assert last < 0.8 * first, [r["loss"] for r in rows]
  evals = [r["eval/loss"] for r in read_metrics(str(tmp_path)) if "eval/loss" in r]
  assert evals[-1] < evals[0] or evals[-1] < 2.5


def test_finetune_starts_from_pretrained_weights(pretrained, tmp_path):
  pre_dir, _ = pretrained
  pre_params, _, _ = checkpoints.restore_params(pre_dir, "latest")
  # A zero learning rate leaves the parameters exactly as initialised.
  config = load_config("finetune", arg=f"runlocal,init={pre_dir}", num_train_steps=1,
                       **{"optimizer.init_lr": 0.0, "optimizer.peak_lr": 0.0,
                          "optimizer.end_lr": 0.0})
  train.train_and_evaluate(config, str(tmp_path))
  params, _, _ = checkpoints.restore_params(str(tmp_path), "latest")
  for part in ("composition_encoder", "xrd_encoder", "fusion"):
    jax.tree.map(np.testing.assert_array_equal, params[part], pre_params[part])
  assert "crystal_system" in params["heads"] and "crystal_system" not in pre_params["heads"]


def test_transfer_trains_only_a_new_head(pretrained, tmp_path):
  pre_dir, _ = pretrained
  pre_params, _, _ = checkpoints.restore_params(pre_dir, "latest")
  config = load_config("transfer", arg=f"runlocal,init={pre_dir}", num_train_steps=3)
  train.train_and_evaluate(config, str(tmp_path))
  params, saved_config, _ = checkpoints.restore_params(str(tmp_path), "latest")
  assert list(saved_config.targets) == ["band_gap"]
  for part in ("composition_encoder", "xrd_encoder", "fusion"):
    jax.tree.map(np.testing.assert_array_equal, params[part], pre_params[part])
  assert set(params["heads"]) >= {"band_gap"}


def test_missing_dataset_is_a_clear_error(tmp_path):
  config = load_config("supervised", **{"data.path": str(tmp_path / "no_such_dataset")})
  with pytest.raises(FileNotFoundError, match="no_such_dataset"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not os.path.exists(tmp_path / "workdir")


def test_paper_batch_on_the_small_embedded_sample_is_a_clear_error(tmp_path, embedded_dataset):
  config = load_config("supervised", global_batch_size=32_768)
  with pytest.raises(ValueError, match="global_batch_size=32768 exceeds"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not os.path.exists(tmp_path / "workdir")


def test_unlabelled_target_is_a_clear_error(tmp_path, fixtures_dir):
  from xxact_jax.data import build_dataset  # pylint: disable=g-import-not-at-top
  cifs = tmp_path / "cifs"
  cifs.mkdir()
  for f in glob.glob(os.path.join(fixtures_dir, "cif_dir", "*.cif")):
    shutil.copy(f, cifs)
  build_dataset.prepare_dataset([str(cifs)], str(tmp_path / "ds"), workers=0, test_fraction=0.0)
  config = load_config("supervised", arg="runlocal,targets=band_gap",
                       **{"data.path": str(tmp_path / "ds")})
  with pytest.raises(ValueError, match="'band_gap' has no labels"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))


def test_mismatched_and_all_damaged_checkpoints_are_clear_errors(pretrained, tmp_path):
  pre_dir, _ = pretrained
  workdir = str(tmp_path / "copy")
  shutil.copytree(pre_dir, workdir)

  other = load_config("mxm_contrastive", num_train_steps=9, **{"model.fusion.num_layers": 2})
  with pytest.raises(ValueError, match="different model .*fusion.num_layers"):
    train.train_and_evaluate(other, workdir)

  # Truncate every array file of every kept step's parameters: nothing intact to resume from.
  steps = sorted(os.listdir(os.path.join(workdir, checkpoints.LATEST_DIR)))
  assert steps == ["3", "6"]
  for path in glob.glob(os.path.join(workdir, checkpoints.LATEST_DIR, "*", "params", "**", "*"),
                        recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 64 and not path.endswith(
        ("_METADATA", "_CHECKPOINT_METADATA", ".json")):
      with open(path, "r+b") as f:
        f.truncate(16)
  config = load_config("mxm_contrastive", num_train_steps=6, checkpoint_every_steps=3,
                       eval_every_steps=3)
  with pytest.raises(checkpoints.CheckpointError, match="No intact checkpoint.*checkpoints/6"):
    train.train_and_evaluate(config, workdir)
  # The damaged steps are kept aside, not deleted.
  damaged = os.listdir(os.path.join(workdir, checkpoints.DAMAGED_DIR))
  assert sorted(d.split("-")[0] for d in damaged if not d.endswith(".txt")) == ["3", "6"]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, embedded_dataset):
  config = load_config("supervised", num_train_steps=40, checkpoint_every_steps=2,
                       eval_every_steps=100, log_every_steps=1,
                       **{"optimizer.init_lr": 1e-4, "optimizer.peak_lr": 1e-3,
                          # "Decaying" towards a huge value blows the run up after step 4.
                          "optimizer.end_lr": 1e15})
  config.model.dtype = "float32"
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
    train.train_and_evaluate(config, str(tmp_path))
  params, _, _ = checkpoints.restore_params(str(tmp_path), "latest")
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _main_command(workdir):
  return [sys.executable, "-m", "xxact_jax.main", "--config=configs/supervised.py:runlocal",
          f"--workdir={workdir}", "--config.num_train_steps=60", "--config.log_every_steps=2",
          "--config.checkpoint_every_steps=10", "--config.eval_every_steps=1000",
          "--config.global_batch_size=16"]


@pytest.mark.slow
def test_sigkill_and_restart_continues_with_identical_losses(tmp_path, embedded_dataset):
  repo = os.path.dirname(CONFIGS)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jit_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  reference, interrupted = str(tmp_path / "reference"), str(tmp_path / "interrupted")
  subprocess.run(_main_command(reference), cwd=repo, env=env, check=True, capture_output=True)

  proc = subprocess.Popen(_main_command(interrupted), cwd=repo, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_checkpoint = os.path.join(interrupted, checkpoints.LATEST_DIR, "10")
  deadline = time.time() + 600
  while not os.path.isdir(first_checkpoint) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  rows_before = len(read_metrics(interrupted))
  last_logged = max(r["step"] for r in read_metrics(interrupted))
  assert last_logged < 60, "the run finished before it could be killed"

  finished = subprocess.run(_main_command(interrupted), cwd=repo, env=env, check=True,
                            capture_output=True, text=True)
  assert f"Outputs in {interrupted}" in finished.stdout
  assert f"python -m xxact_jax.report --workdir={interrupted}" in finished.stdout
  resumed = [r for r in read_metrics(interrupted)[rows_before:] if "loss" in r]
  expected = {r["step"]: r["loss"] for r in read_metrics(reference) if "loss" in r}
  assert resumed, "the restarted run logged nothing"
  assert 10 < resumed[0]["step"] <= 60, "the restart did not resume from a checkpoint"
  assert resumed[-1]["step"] == 60
  for r in resumed:
    assert r["loss"] == pytest.approx(expected[r["step"]], rel=1e-6, abs=1e-7), r["step"]
  # A finished workdir says so when the command is run again, and trains nothing.
  rows = len(read_metrics(interrupted))
  again = subprocess.run(_main_command(interrupted), cwd=repo, env=env, check=True,
                         capture_output=True, text=True)
  assert "already trained to step 60 of 60" in again.stderr
  assert len(read_metrics(interrupted)) == rows


def test_overriding_targets_or_objective_reaches_the_model(tmp_path, embedded_dataset):
  """--config.targets / --config.objective alone: the heads and losses follow, or start-up
  refuses with what would work, before the workdir exists."""
  config = load_config("supervised", num_train_steps=2, eval_every_steps=2,
                       checkpoint_every_steps=2, log_every_steps=1)
  config.targets = ("band_gap",)          # as --config.targets="('band_gap',)" sets it
  metrics = train.train_and_evaluate(config, str(tmp_path / "band_gap"))
  assert "eval/band_gap_mae" in metrics and "eval/crystal_system_accuracy" not in metrics
  restored = checkpoints.restore_checkpoint(str(tmp_path / "band_gap"), "latest")
  assert tuple(restored.config.model.targets) == ("band_gap",)
  assert set(restored.params["heads"]) == {"band_gap"}

  pretraining = load_config("supervised", num_train_steps=2, eval_every_steps=2,
                            checkpoint_every_steps=2, log_every_steps=1)
  pretraining.objective = "mxm"
  metrics = train.train_and_evaluate(pretraining, str(tmp_path / "mxm"))
  assert "eval/mxm_loss" in metrics

  for field, value, message in (("objective", "masked", "Unknown objective 'masked'"),
                                ("targets", ("band_gap", "bandgap"),
                                 r"Unknown target\(s\) \['bandgap'\]"),
                                ("regression_loss", "huber", "Unknown regression_loss")):
    bad = load_config("supervised")
    bad[field] = value
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(bad, str(tmp_path / field))
    assert not os.path.exists(tmp_path / field)
  crabnet = load_config("crabnet")
  crabnet.objective = "contrastive"
  with pytest.raises(ValueError, match="crabnet model has none"):
    train.train_and_evaluate(crabnet, str(tmp_path / "crabnet"))


def test_command_mistakes_are_one_line_errors(tmp_path):
  """python -m xxact_jax.main: an unknown field, a missing config, a bad value, a workdir that is
  a file: one `error:` line, status 2, nothing written."""
  repo = os.path.dirname(CONFIGS)
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  cases = [(["--config=configs/supervised.py:runlocal", "--config.foo=1"], "foo"),
           (["--config=configs/nope.py"], "nope.py"),
           (["--config=configs/supervised.py:runlocal,targets=bandgap"], "bandgap"),
           (["--config=configs/supervised.py:runlocal", "--config.objective=masked"], "masked")]
  for args, named in cases:
    workdir = tmp_path / "workdir"
    result = subprocess.run([sys.executable, "-m", "xxact_jax.main", *args,
                             f"--workdir={workdir}"], cwd=repo, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items()
                                 if k != "XXACT_JAX_TRACEBACK"})
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and named in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not workdir.exists()
  result = subprocess.run([sys.executable, "-m", "xxact_jax.main",
                           "--config=configs/supervised.py:runlocal", f"--workdir={a_file}"],
                          cwd=repo, capture_output=True, text=True)
  assert result.returncode == 2 and "is a file" in result.stderr
