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
SAMPLE_ROWS = 1500
SAMPLE_SEED = 0
_BLOCK_ROWS = 256
_SAMPLE_COLUMNS = ("material_id", "source_index", "formula", "n_sites",
                   "formation_energy_per_atom", "band_gap", "spacegroup_number",
                   "crystal_system", "split", "cif")


def cache_dir() -> str:
  return os.environ.get("XXACT_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "xxact_jax")


def _sample_digest() -> str:
  with open(SAMPLE_FILE, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:12]


def default_dataset_path(workers: int | None = None) -> str:
  """Path of the featurised embedded sample, building it on first use.

  The dataset is prepared in a temporary directory and renamed into place, so a
  half-written cache is never used; a lock file keeps concurrent callers from
  featurising twice.
  """
  from xxact_jax.data import prepare  # pylint: disable=g-import-not-at-top
  root = cache_dir()
  os.makedirs(root, exist_ok=True)
  target = os.path.join(root, f"mp_sample-v{schema.SCHEMA_VERSION}-{_sample_digest()}")
  done = os.path.join(target, schema.METADATA_FILE)
  if os.path.exists(done):
    return target
  with open(os.path.join(root, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(done):
      return target
    logging.info("Featurising the embedded sample (%d structures) into %s", SAMPLE_ROWS, target)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=root)
    try:
      prepare.prepare_dataset([SAMPLE_FILE], staging, workers=workers, seed=SAMPLE_SEED,
                              block_rows=_BLOCK_ROWS)
      if os.path.exists(target):   # an incomplete leftover without metadata.json
        shutil.rmtree(target)
      os.rename(staging, target)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return target


def build_sample(source_csv: str, output: str = SAMPLE_FILE, num_rows: int = SAMPLE_ROWS,
                 seed: int = SAMPLE_SEED) -> None:
  """Writes the embedded sample: `num_rows` random train/val rows of mp_36k.

  python -c "from xxact_jax.data import embedded; embedded.build_sample('mp_36k.csv.xz')"
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  table = pd.read_csv(source_csv)
  table = table[table["split"].isin(["train", "val"])]
  sample = table.sample(n=num_rows, random_state=seed).sort_values("source_index")
  sample.loc[:, list(_SAMPLE_COLUMNS)].to_csv(output, index=False)
