"""Random subsets of a prepared dataset (`prepare --subset_of`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from xxact_jax.data import open_dataset
from xxact_jax.data import subset


def test_a_subset_holds_the_chosen_rows_with_their_splits_and_new_statistics(embedded_dataset,
                                                                              tmp_path):
  out = str(tmp_path / "sub")
  metadata = subset.subset_dataset(embedded_dataset, out, 300, seed=3)
  source, sub = open_dataset(embedded_dataset), open_dataset(out)
  assert len(sub) == 300 and metadata["counts"] == {"rows": 300, "valid": 300, "errors": 0}
  assert metadata["subset_of"] == {"source": embedded_dataset, "rows": 300, "seed": 3}
  by_id = {mid: i for i, mid in enumerate(source.material_ids(np.arange(len(source))))}
  sub_ids = sub.material_ids(np.arange(len(sub)))
  assert len(set(sub_ids)) == 300
  picked = np.array([by_id[m] for m in sub_ids])
  got, want = sub.read_batch(np.arange(300)), source.read_batch(picked)
  for key in ("xrd", "species", "fractions", "formation_energy_per_atom", "crystal_system"):
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  # Splits are kept row by row; label statistics are the subset's own.
  source_train = set(open_dataset(embedded_dataset, "train").material_ids(
      np.arange(len(open_dataset(embedded_dataset, "train")))))
  train_ids = open_dataset(out, "train").material_ids(np.arange(metadata["splits"]["train"]))
  assert set(train_ids) <= source_train
  assert metadata["splits"]["train"] + metadata["splits"]["test"] == 300
  energies = open_dataset(out, "train").read_batch(
      np.arange(metadata["splits"]["train"]))["formation_energy_per_atom"]
  stats = metadata["label_stats"]["formation_energy_per_atom"]
  assert stats["count"] == metadata["splits"]["train"]
  assert stats["mean"] == pytest.approx(float(np.mean(energies.astype(np.float64))), rel=1e-6)
  # Another seed draws other rows.
  other = subset.subset_dataset(embedded_dataset, str(tmp_path / "other"), 300, seed=4)
  assert other["label_stats"] != metadata["label_stats"]


def test_bad_subsets_are_clear_errors_and_leave_the_output_alone(embedded_dataset, tmp_path):
  out = str(tmp_path / "sub")
  with pytest.raises(ValueError, match="valid rows"):
    subset.subset_dataset(embedded_dataset, out, 10_000)
  subset.subset_dataset(embedded_dataset, out, 20)
  before = open(os.path.join(out, "metadata.json")).read()
  with pytest.raises(ValueError, match="already holds a dataset"):
    subset.subset_dataset(embedded_dataset, out, 30)
  assert open(os.path.join(out, "metadata.json")).read() == before


def test_the_prepare_command_makes_subsets(embedded_dataset, tmp_path):
  out = str(tmp_path / "cli")
  cmd = [sys.executable, "-m", "xxact_jax.prepare", f"--subset_of={embedded_dataset}",
         "--limit=50", f"--output={out}"]
  process = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert process.returncode == 0, process.stderr[-2000:]
  assert json.loads(process.stdout)["counts"]["valid"] == 50
  assert len(open_dataset(out)) == 50
  missing = subprocess.run(cmd[:4] + [f"--output={tmp_path / 'x'}"], capture_output=True,
                           text=True, timeout=120)
  assert missing.returncode != 0 and "--limit" in missing.stderr
