r"""Featurises crystal structures into a TensorStore dataset.

  python -m xxact_jax.prepare --input=data/mp_36k.csv.xz --output=/data/mp36k
  python -m xxact_jax.prepare --input=alexandria_000.json.bz2 alexandria_001.json.bz2 \
      --output=gs://bucket/alex --shard=3 --num_shards=8

  python -m xxact_jax.prepare --subset_of=/data/mp36k --limit=10000 --output=/tmp/mp10k

Re-running with the same arguments resumes; see docs/DATASET.md. --subset_of copies LIMIT random
valid rows of a prepared dataset (seeded by --seed, splits kept) without featurising anything.
"""

import json

from absl import flags
from absl import logging

from xxact_jax import cli
from xxact_jax.data import build_dataset
from xxact_jax.data import schema
from xxact_jax.data import subset as subset_lib

FLAGS = flags.FlagValues()
_INPUT = flags.DEFINE_list(
    "input", None, "Input files/directories (comma-separated, or several after --input=).",
    flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory or TensorStore kvstore URL.",
                              flag_values=FLAGS)
_WORKERS = flags.DEFINE_integer("workers", None, "Featurisation processes (default: all cores; "
                                "0 or 1 = in-process).", flag_values=FLAGS)
_LIMIT = flags.DEFINE_integer("limit", None, "Use only the first LIMIT records.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/test split.", flag_values=FLAGS)
_TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", 0.1, "Fraction of rows in the test split; 1 makes the whole input a test set.",
    flag_values=FLAGS)
_MAX_ELEMENTS = flags.DEFINE_integer(
    "max_elements", schema.DEFAULT_MAX_ELEMENTS,
    "K: element slots per composition; a structure with more elements is an error row.",
    flag_values=FLAGS)
_BLOCK_ROWS = flags.DEFINE_integer("block_rows", schema.DEFAULT_BLOCK_ROWS,
                                   "Rows per storage chunk and per resume unit.", flag_values=FLAGS)
_MIN_FORMATION_ENERGY = flags.DEFINE_float(
    "min_formation_energy", None,
    "Store formation energies below this (eV/atom) as missing; default keeps all.",
    flag_values=FLAGS)
_SHARD = flags.DEFINE_integer("shard", 0, "This process's shard index.", flag_values=FLAGS)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Number of processes filling the dataset.",
                                   flag_values=FLAGS)
_MAX_REFLECTIONS = flags.DEFINE_float(
    "max_reflections", schema.DEFAULT_MAX_REFLECTIONS,
    "A structure whose XRD pattern would have more reflections up to 2θ = 90° (estimated as "
    "3.2 × cell volume in Å³) is an error row: a 1000 Å cell would exhaust memory.",
    flag_values=FLAGS)
_MAX_XRD_WORK = flags.DEFINE_float(
    "max_xrd_work", schema.DEFAULT_MAX_XRD_WORK,
    "Likewise for estimated reflections × sites.", flag_values=FLAGS)
_RECORD_TIMEOUT_S = flags.DEFINE_float(
    "record_timeout_s", build_dataset.DEFAULT_RECORD_TIMEOUT_S,
    "A record taking longer to featurise is an error row (0 = no limit).", flag_values=FLAGS)
_ALLOW_DUPLICATE_IDS = flags.DEFINE_boolean(
    "allow_duplicate_ids", False,
    "Keep the first row of a repeated material_id and make the others error rows; by default "
    "duplicates stop prepare before anything is written.", flag_values=FLAGS)
_XRD_ENGINE = flags.DEFINE_enum(
    "xrd_engine", build_dataset.DEFAULT_XRD_ENGINE, list(build_dataset.XRD_ENGINES),
    "Where the XRD patterns come from. jax (the default): the workers parse the structures and "
    "find the symmetry labels, the main process simulates the patterns with xxact_jax.xrd_engine "
    "in batches on the default JAX device (pymatgen's physics; on 2,000 and 6,000 mp_36k rows "
    "the two engines' datasets are equal within 0.07 on the 0-100 scale, "
    "benchmarks/RESULTS.md); a structure it refuses is an error row. pymatgen: XRDCalculator in "
    "the workers, as before. "
    "Recorded in the dataset: a resume must use the same engine.", flag_values=FLAGS)
_STORE_STRUCTURES = flags.DEFINE_boolean(
    "store_structures", False,
    "Also store each crystal structure (lattice, sites, point-group rotations, reflection list) "
    "beside its pattern, so training can simulate the pattern again on the device with "
    "per-reflection sample effects (--config.data.xrd_source=simulated). A structure larger "
    "than --structure_sites / --structure_reflections keeps only its pattern.", flag_values=FLAGS)
_STRUCTURE_SITES = flags.DEFINE_integer(
    "structure_sites", schema.DEFAULT_STRUCTURE_SITES,
    "Site entries stored per structure (a disordered site counts once per species).",
    flag_values=FLAGS)
_STRUCTURE_REFLECTIONS = flags.DEFINE_integer(
    "structure_reflections", schema.DEFAULT_STRUCTURE_REFLECTIONS,
    "Reflections stored per structure (up to 2θ ≈ 96° with the strain margin).",
    flag_values=FLAGS)
_SUBSET_OF = flags.DEFINE_string(
    "subset_of", None, "A prepared dataset: copy --limit random valid rows of it to --output "
    "instead of featurising --input.", flag_values=FLAGS)


def main(argv=None):
  # Paths given after `--input=a` without a comma arrive as extra arguments.
  extra = cli.parse(FLAGS, argv, __doc__, positional=True)
  inputs = list(_INPUT.value or []) + extra
  logging.set_verbosity(logging.INFO)
  try:
    if _SUBSET_OF.value:
      if inputs or not _OUTPUT.value or not _LIMIT.value:
        cli.fail("--subset_of needs --limit and --output, and no --input.")
      metadata = subset_lib.subset_dataset(_SUBSET_OF.value, _OUTPUT.value, _LIMIT.value,
                                           seed=_SEED.value)
      return print(json.dumps({"output": _OUTPUT.value, "counts": metadata["counts"],
                               "splits": metadata["splits"]}, indent=1))
    if not inputs or not _OUTPUT.value:
      cli.fail("--input and --output are required.")
    summary = build_dataset.prepare_dataset(
        inputs, _OUTPUT.value, workers=_WORKERS.value, limit=_LIMIT.value, seed=_SEED.value,
        test_fraction=_TEST_FRACTION.value, max_elements=_MAX_ELEMENTS.value,
        block_rows=_BLOCK_ROWS.value, min_formation_energy=_MIN_FORMATION_ENERGY.value,
        shard=_SHARD.value, num_shards=_NUM_SHARDS.value,
        max_reflections=_MAX_REFLECTIONS.value, max_xrd_work=_MAX_XRD_WORK.value,
        allow_duplicate_ids=_ALLOW_DUPLICATE_IDS.value, record_timeout_s=_RECORD_TIMEOUT_S.value,
        xrd_engine=_XRD_ENGINE.value, store_structures=_STORE_STRUCTURES.value,
        structure_sites=_STRUCTURE_SITES.value,
        structure_reflections=_STRUCTURE_REFLECTIONS.value)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  cli.run(main)
