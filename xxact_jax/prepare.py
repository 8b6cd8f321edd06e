r"""Featurises crystal structures into a TensorStore dataset.

  python -m xxact_jax.prepare --input=data/mp_36k.csv.xz --output=/data/mp36k
  python -m xxact_jax.prepare --input=alexandria_000.json.bz2 alexandria_001.json.bz2 \
      --output=gs://bucket/alex --shard=3 --num_shards=8

Re-running with the same arguments resumes; see docs/DATASET.md.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

from xxact_jax.data import prepare as prepare_lib
from xxact_jax.data import schema

_INPUT = flags.DEFINE_list(
    "input", None, "Input files/directories (comma-separated, or several after --input=).")
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory or TensorStore kvstore URL.")
_WORKERS = flags.DEFINE_integer("workers", None, "Featurisation processes (default: all cores; "
                                "0 or 1 = in-process).")
_LIMIT = flags.DEFINE_integer("limit", None, "Use only the first LIMIT records.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/test split.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "Fraction of rows in the test split.")
_MAX_ELEMENTS = flags.DEFINE_integer(
    "max_elements", schema.DEFAULT_MAX_ELEMENTS,
    "K: element slots per composition; a structure with more elements is an error row.")
_BLOCK_ROWS = flags.DEFINE_integer("block_rows", schema.DEFAULT_BLOCK_ROWS,
                                   "Rows per storage chunk and per resume unit.")
_MIN_FORMATION_ENERGY = flags.DEFINE_float(
    "min_formation_energy", None,
    "Store formation energies below this (eV/atom) as missing; default keeps all.")
_SHARD = flags.DEFINE_integer("shard", 0, "This process's shard index.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Number of processes filling the dataset.")


def main(argv):
  # Paths given after `--input=a` without a comma arrive as extra arguments.
  inputs = list(_INPUT.value or []) + list(argv[1:])
  if not inputs or not _OUTPUT.value:
    raise app.UsageError("--input and --output are required.")
  logging.set_verbosity(logging.INFO)
  try:
    summary = prepare_lib.prepare_dataset(
        inputs, _OUTPUT.value, workers=_WORKERS.value, limit=_LIMIT.value, seed=_SEED.value,
        test_fraction=_TEST_FRACTION.value, max_elements=_MAX_ELEMENTS.value,
        block_rows=_BLOCK_ROWS.value, min_formation_energy=_MIN_FORMATION_ENERGY.value,
        shard=_SHARD.value, num_shards=_NUM_SHARDS.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  app.run(main)
