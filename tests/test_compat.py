"""A checkpoint and a dataset written by an earlier version (tests/fixtures/v0: a tiny model
trained for 2 steps and the 8-row fixture prepared, with xxact_jax at commit d180aa6) still load,
predict identically and resume."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest

import xxact_jax
from xxact_jax import data as data_lib
from xxact_jax import targets as targets_lib
from xxact_jax.training import checkpoints
from xxact_jax.training import defaults
from xxact_jax.training import train
from float32_tolerance import assert_close

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
V0 = os.path.join(FIXTURES, "v0")


@pytest.fixture(scope="module")
def expected():
  with open(os.path.join(V0, "expected.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def predictor():
  # The model's own outputs: no reference lookup (it would answer the fixture's known
  # compositions from the training data instead) and no indexing.
  return xxact_jax.load(os.path.join(V0, "run"), checkpoint="latest", reference="none",
                       indexing=False)


def _assert_same(outputs, expected_outputs, targets):
  assert set(expected_outputs) == set(targets)
  for t, values in expected_outputs.items():
    minimum = targets_lib.get(t).minimum   # stored before predictions were clipped to it
    if minimum is not None:
      values = np.maximum(values, minimum)
    assert_close(outputs[t], values, err_msg=t)   # stored on another CPU


def test_old_checkpoint_predicts_measured_files_as_before(predictor, expected):
  case = expected["files"]
  paths = [os.path.join(FIXTURES, "patterns", p) for p in case["patterns"]]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")        # partial-coverage notes of the fixture scans
    out = predictor.predict_batch(case["formulas"], paths)
  _assert_same(out, case["outputs"], predictor.targets)
  assert predictor.step == 2


def test_old_dataset_reads_and_predicts_as_before(predictor, expected):
  case = expected["dataset_train_rows"]
  ds = data_lib.open_dataset(os.path.join(V0, "dataset"), split="train")
  index = np.arange(len(ds))
  assert [str(x) for x in ds.material_ids(index)] == case["material_ids"]
  batch = ds.read_batch(index)
  np.testing.assert_array_equal(batch["species"], case["species"])
  assert float(np.asarray(batch["xrd"], np.float64).sum()) == pytest.approx(case["xrd_sum"])
  out = predictor.predict_arrays(batch["species"], batch["fractions"], batch["xrd"])
  _assert_same({t: out[t] for t in predictor.targets}, case["outputs"], predictor.targets)


def test_old_workdir_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(os.path.join(V0, "run"), workdir)
  dataset = os.path.join(V0, "dataset")
  # The dataset was at another path when the run was written; the run itself is unchanged.
  with open(os.path.join(workdir, "config.json")) as f:
    stored = json.load(f)
  stored["data"]["path"] = dataset
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(stored, f)
  config = defaults.load_config_file(
      os.path.join(os.path.dirname(FIXTURES), "..", "configs", "supervised.py"),
      "runlocal,targets=all")
  for key, value in dict(num_train_steps=2, global_batch_size=4, eval_batch_size=4,
                         tensorboard=False, checkpoint_every_steps=2,
                         eval_every_steps=2).items():
    config[key] = value
  config.data.path = dataset
  # Same config as written: nothing to do (and no refusal over fields added since).
  train.train_and_evaluate(config, workdir)
  config.num_train_steps = 3
  config.resume_allow_changes = True
  train.train_and_evaluate(config, workdir)
  restored = checkpoints.restore_checkpoint(workdir, "latest")
  assert restored.step == 3
  assert checkpoints.verify_checksums(restored.path) is None
  assert os.path.exists(os.path.join(restored.path, checkpoints.CHECKSUM_FILE))
