"""prepare: arrays and metadata, labels, bad records, argument checks, shards, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from xxact_jax import constants
from xxact_jax.data import block_plan
from xxact_jax.data import build_dataset
from xxact_jax.data import embedded
from xxact_jax.data import open_dataset
from xxact_jax.data import schema
from xxact_jax.data import store


def all_arrays(path):
  names = schema.fields(schema.DEFAULT_MAX_ELEMENTS)
  return {n: store.read_full(a) for n, a in store.open_arrays(path, names).items()}


def assert_same_arrays(a, b):
  arrays_a, arrays_b = all_arrays(a), all_arrays(b)
  for name in arrays_a:
    np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


def test_records_and_labels_match_the_source(small_dataset, fixtures_dir):
  table = pd.read_csv(os.path.join(fixtures_dir, "mp_small.csv.gz"))
  ds = open_dataset(small_dataset)
  assert len(ds) == 8 and ds.metadata["counts"] == {"rows": 8, "valid": 8, "errors": 0}
  assert ds.material_ids(np.arange(8)) == table["material_id"].tolist()
  for i, row in table.iterrows():
    record = ds[i]
    assert record["material_id"] == row["material_id"]
    assert record["formation_energy_per_atom"] == np.float32(row["formation_energy_per_atom"])
    assert record["band_gap"] == np.float32(row["band_gap"])
    assert constants.CRYSTAL_SYSTEMS[record["crystal_system"]] == row["crystal_system"]
    assert record["spacegroup_number"] == row["spacegroup_number"]
    assert record["xrd"].max() == 100 and record["xrd"].shape == (4250,)
  nacl = ds[1]
  np.testing.assert_array_equal(nacl["species"][:3], [11, 17, 0])
  np.testing.assert_array_equal(nacl["fractions"][:3], [0.5, 0.5, 0])


def test_split_and_label_stats(small_dataset):
  train, test = open_dataset(small_dataset, "train"), open_dataset(small_dataset, "test")
  assert (len(train), len(test)) == (6, 2)
  assert not set(train.rows) & set(test.rows)
  np.testing.assert_array_equal(
      block_plan.split_assignment(8, 1, 0.25)[train.rows], np.zeros(6))
  stats = train.metadata["label_stats"]
  gaps = train.read_batch(np.arange(6))["band_gap"].astype(np.float64)
  assert stats["band_gap"]["mean"] == pytest.approx(gaps.mean())
  assert stats["band_gap"]["std"] == pytest.approx(gaps.std())
  systems = train.read_batch(np.arange(6))["crystal_system"]
  assert stats["crystal_system"]["counts"] == np.bincount(systems, minlength=7).tolist()
  assert sum(stats["spacegroup_number"]["counts"]) == 6
  assert train.metadata["max_elements"] == 10 and train.metadata["grid"]["num_points"] == 4250


def test_bad_records_go_to_errors_jsonl_and_are_excluded(tmp_path, fixtures_dir):
  out = str(tmp_path / "bad")
  summary = build_dataset.prepare_dataset([os.path.join(fixtures_dir, "mp_bad.csv")], out,
                                          workers=0, block_rows=2, test_fraction=0.0)
  assert summary["errors_total"] == 3 and summary["valid_total"] == 2
  with open(os.path.join(out, "errors.jsonl")) as f:
    errors = [json.loads(line) for line in f]
  assert [e["row"] for e in errors] == [1, 2, 3]
  assert [e["material_id"] for e in errors] == ["mp-22862", "mp-2534", "mp-1"]
  assert "'Qq'" in errors[0]["reason"] and "cif parse failed" in errors[1]["reason"]
  assert "label 'band_gap' is not a number" in errors[2]["reason"]
  ds = open_dataset(out)
  assert ds.material_ids(np.arange(len(ds))) == ["mp-149", "mp-1265"]
  assert np.isnan(ds[1]["band_gap"])     # a missing label stays missing; the row is kept
  valid = all_arrays(out)["valid"]
  np.testing.assert_array_equal(valid, [1, 0, 0, 0, 1])


def test_too_many_elements_is_an_error_row_not_truncation(tmp_path, fixtures_dir):
  out = str(tmp_path / "k1")
  summary = build_dataset.prepare_dataset([os.path.join(fixtures_dir, "cif_dir")], out, workers=0,
                                          max_elements=1)
  assert summary["errors_total"] == 2 and summary["valid_total"] == 1   # only Si is unary
  with open(os.path.join(out, "errors.jsonl")) as f:
    assert "more than max_elements=1" in f.readline()


def test_argument_errors(tmp_path, fixtures_dir):
  small = os.path.join(fixtures_dir, "mp_small.csv.gz")
  with pytest.raises(FileNotFoundError, match="missing.csv"):
    build_dataset.prepare_dataset([str(tmp_path / "missing.csv")], str(tmp_path / "o"))
  out = str(tmp_path / "o2")
  build_dataset.prepare_dataset([small], out, workers=0, limit=2)
  with pytest.raises(ValueError, match=r"different arguments \(\['limit'\]\)"):
    build_dataset.prepare_dataset([small], out, workers=0, limit=3)
  with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
    open_dataset(str(tmp_path))


def test_cli_reports_a_missing_input_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "xxact_jax.prepare", f"--input={tmp_path}/none.csv.xz",
       f"--output={tmp_path}/out"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "none.csv.xz" in result.stderr and "does not exist" in result.stderr
  assert "Traceback" not in result.stderr


def test_shards_fill_disjoint_blocks_of_the_same_arrays(tmp_path, small_dataset, fixtures_dir):
  out = str(tmp_path / "sharded")
  args = dict(workers=0, block_rows=3, test_fraction=0.25, seed=1, num_shards=2)
  inputs = [os.path.join(fixtures_dir, "mp_small.csv.gz")]
  first = build_dataset.prepare_dataset(inputs, out, shard=1, **args)
  assert not first["complete"] and first["blocks_done_now"] == 1
  with pytest.raises(ValueError, match="incomplete"):
    open_dataset(out)
  second = build_dataset.prepare_dataset(inputs, out, shard=0, **args)
  assert second["complete"] and second["blocks_done_now"] == 2
  assert_same_arrays(out, small_dataset)
  assert open_dataset(out).metadata["splits"] == open_dataset(small_dataset).metadata["splits"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_arrays(tmp_path):
  args = dict(limit=64, block_rows=4, seed=3)
  command = [sys.executable, "-m", "xxact_jax.prepare", f"--input={embedded.SAMPLE_FILE}",
             f"--output={tmp_path}/killed", "--workers=1",
             *[f"--{k}={v}" for k, v in args.items()]]
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  progress = tmp_path / "killed" / "progress"

  def blocks_done():
    # Finished blocks only: a marker being written shows as a temporary file beside them.
    return len([n for n in os.listdir(progress) if n.endswith(".json")]) if progress.exists() else 0

  deadline = time.monotonic() + 300
  while blocks_done() < 3:
    assert process.poll() is None and time.monotonic() < deadline, "run ended before the kill"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  done_at_kill = blocks_done()
  assert done_at_kill < 16 and not (tmp_path / "killed" / "metadata.json").exists()

  resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  summary = json.loads(resumed.stdout)
  assert summary["blocks_done_before"] >= done_at_kill and summary["complete"]
  assert summary["blocks_done_before"] + summary["blocks_done_now"] == 16

  build_dataset.prepare_dataset([embedded.SAMPLE_FILE], str(tmp_path / "straight"), workers=0,
                                **args)
  assert_same_arrays(str(tmp_path / "killed"), str(tmp_path / "straight"))
  with open(tmp_path / "killed" / "metadata.json") as f1, \
       open(tmp_path / "straight" / "metadata.json") as f2:
    assert json.load(f1)["label_stats"] == json.load(f2)["label_stats"]


def test_output_may_be_a_kvstore_url(tmp_path, fixtures_dir):
  url = f"file://{tmp_path}/url_dataset"
  build_dataset.prepare_dataset([os.path.join(fixtures_dir, "cif_dir")], url, workers=0)
  ds = open_dataset(url)
  assert ds.material_ids([0, 1, 2]) == ["mp-149", "mp-22862", "mp-2534"]
  assert (tmp_path / "url_dataset" / "metadata.json").exists()
  assert np.isnan(ds[2]["band_gap"]) and not np.isnan(ds[0]["band_gap"])


def test_formation_energy_filter_keeps_the_row_and_masks_the_label(tmp_path, fixtures_dir):
  source = os.path.join(fixtures_dir, "mp_small.csv.gz")
  e_form = pd.read_csv(source)["formation_energy_per_atom"].to_numpy()
  out = str(tmp_path / "filtered")
  build_dataset.prepare_dataset([source], out, workers=0, min_formation_energy=-1.0)
  ds = open_dataset(out)
  stored = ds.read_batch(np.arange(len(ds)))["formation_energy_per_atom"]
  assert len(ds) == 8 and np.isnan(stored).sum() == (e_form < -1.0).sum() > 0
  np.testing.assert_array_equal(stored[e_form >= -1.0], e_form[e_form >= -1.0].astype(np.float32))
