"""Embedded sample: shipped resource, first-use featurisation cache, pymatgen-free import."""

import os
import subprocess
import sys

import pandas as pd

from xxact_jax.data import embedded
from xxact_jax.data import open_dataset


def test_embedded_dataset_holds_the_shipped_sample(embedded_dataset):
  table = pd.read_csv(embedded.SAMPLE_FILE)
  ds = open_dataset(embedded_dataset)
  assert len(table) == embedded.SAMPLE_ROWS == ds.metadata["counts"]["rows"]
  assert ds.metadata["counts"]["errors"] == 0
  assert ds.material_ids([0, len(ds) - 1]) == [table.material_id.iloc[0],
                                                table.material_id.iloc[-1]]
  assert ds.metadata["splits"]["test"] == round(0.1 * len(table))
  assert os.path.exists(os.path.join(embedded.RESOURCE_DIR, "LICENSE-mp_sample.md"))


def test_cache_is_built_once_and_never_used_half_written(tmp_path, fixtures_dir):
  sample = os.path.join(fixtures_dir, "mp_small.csv.gz")
  root = str(tmp_path / "cache")
  path = embedded.cached_dataset(sample, root, workers=0)
  stamp = os.stat(os.path.join(path, "metadata.json")).st_mtime_ns
  assert embedded.cached_dataset(sample, root, workers=0) == path
  assert os.stat(os.path.join(path, "metadata.json")).st_mtime_ns == stamp
  assert not [n for n in os.listdir(root) if n.startswith(".staging-")]

  # A directory without metadata.json (e.g. a killed first use) is rebuilt, not used.
  os.remove(os.path.join(path, "metadata.json"))
  rebuilt = embedded.cached_dataset(sample, root, workers=0)
  assert rebuilt == path and len(open_dataset(rebuilt)) == 8


def test_importing_the_data_package_does_not_import_pymatgen():
  code = ("import sys, xxact_jax.data, xxact_jax.data.loader, xxact_jax.data.build_dataset; "
          "print('pymatgen' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
  assert result.stdout.strip() == "False"
