"""Embedded default data: a real mp_36k sample shipped in resources/, featurised on first use."""

import fcntl
import hashlib
import os
import shutil
import tempfile

from absl import logging

from xxact_jax.data import schema

RESOURCE_DIR = os.path.join(os.path.dirname(__file__), "resources")
SAMPLE_FILE = os.path.join(RESOURCE_DIR, "mp_sample.csv.xz")
SAMPLE_ROWS = 1000
SAMPLE_MAX_SITES = 20   # small cells keep first-use featurisation short
SAMPLE_SEED = 0
_BLOCK_ROWS = 256
_SAMPLE_COLUMNS = ("material_id", "source_index", "formula", "n_sites",
                   "formation_energy_per_atom", "band_gap", "spacegroup_number",
                   "crystal_system", "split", "cif")


def _digest(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:12]


def default_dataset_path(workers: int | None = None) -> str:
  """Path of the featurised embedded sample, built in the cache dir on first use."""
  root = os.environ.get("XXACT_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "xxact_jax")
  return cached_dataset(SAMPLE_FILE, root, workers=workers)


def cached_dataset(sample_file: str, root: str, workers: int | None = None) -> str:
  """Featurises `sample_file` into `root` once and returns the dataset directory: prepared in a
  staging directory and renamed into place, so a half-written cache is never used; a lock file
  keeps concurrent callers from featurising twice."""
  from xxact_jax.data import build_dataset  # pylint: disable=g-import-not-at-top
  os.makedirs(root, exist_ok=True)
  name = os.path.basename(sample_file).split(".")[0]
  target = os.path.join(root, f"{name}-v{schema.SCHEMA_VERSION}-{_digest(sample_file)}")
  done = os.path.join(target, schema.METADATA_FILE)
  if os.path.exists(done):
    return target
  with open(os.path.join(root, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(done):
      return target
    logging.info("Featurising %s into %s (first use).", sample_file, target)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=root)
    try:
      build_dataset.prepare_dataset([sample_file], staging, workers=workers, seed=SAMPLE_SEED,
                                    block_rows=_BLOCK_ROWS)
      if os.path.exists(target):   # an incomplete leftover without metadata.json
        shutil.rmtree(target)
      os.rename(staging, target)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return target


def build_sample(source_csv: str, output: str = SAMPLE_FILE, num_rows: int = SAMPLE_ROWS,
                 seed: int = SAMPLE_SEED, max_sites: int = SAMPLE_MAX_SITES) -> None:
  """Writes the embedded sample: `num_rows` random train/val rows of mp_36k with <= max_sites atoms.

  python -c "from xxact_jax.data import embedded; embedded.build_sample('mp_36k.csv.xz')"
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  table = pd.read_csv(source_csv)
  table = table[table["split"].isin(["train", "val"]) & (table["n_sites"] <= max_sites)]
  sample = table.sample(n=num_rows, random_state=seed).sort_values("source_index")
  sample.loc[:, list(_SAMPLE_COLUMNS)].to_csv(output, index=False)
