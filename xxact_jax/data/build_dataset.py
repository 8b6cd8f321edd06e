"""Structures -> TensorStore dataset: multiprocess featurisation, resumable blocks, host shards.

Rows are processed in blocks of `block_rows` (one storage chunk of every array).
A block is written with one write per array; after the writes commit, a marker
`progress/block_NNNNNN.json` (with the block's errors) is written, so a killed run
re-run with the same arguments redoes only unmarked blocks. With
`num_shards=N`, shard i owns blocks b with b % N == i; the arrays are created at
full size by every shard, so N processes on N hosts fill disjoint chunks. The
process that finds every block marked writes errors.jsonl, label statistics and,
last, metadata.json (its presence means the dataset is complete).

The parts: block_plan (plan.json: arguments, input fingerprints, duplicate ids, which blocks are
done), worker_pool (featurisation on worker processes that may die or hang), block_writer (block
buffers, the JAX XRD engine, writes and markers). Faults: a resume over changed inputs and
duplicate material ids are refused; workers die with the parent (SIGKILL of prepare leaves no
orphans); a record whose XRD would be too large, that runs past --record_timeout_s, or whose
worker dies (out of memory, a native crash) becomes an error row and the run goes on.

XRD (xrd_engine): "jax" (default) has the workers return each structure's arrays and simulates
the patterns of whole blocks in the main process (xxact_jax.xrd_engine, imported only then) on a
background thread before writing them; "pymatgen" computes them in the workers. The per-record
guards run in the workers either way; the engine's own time is bounded by max_reflections.
"""
import dataclasses
import itertools
import json
import os
import time
from typing import Iterator, Sequence

from absl import logging

from xxact_jax import constants
from xxact_jax import progress as progress_lib
from xxact_jax.data import block_plan
from xxact_jax.data import block_writer
from xxact_jax.data import readers
from xxact_jax.data import schema
from xxact_jax.data import store
from xxact_jax.data import stats as stats_lib
from xxact_jax.data import structures as structures_lib
from xxact_jax.data import worker_pool

_LOG_ERRORS = 20         # errors also logged individually, up to this many
DEFAULT_RECORD_TIMEOUT_S = 300.0
XRD_ENGINES = ("pymatgen", "jax")
DEFAULT_XRD_ENGINE = "jax"


def _tasks(config: block_plan.PrepareConfig, num_rows: int, todo: set[int],
           row_errors: dict) -> Iterator[tuple[int, list[readers.RawRecord]]]:
  """Yields (block, records): worker tasks of at most TASK_ROWS records from blocks in `todo`;
  `row_errors` ({row: reason}, e.g. duplicate ids) turns those rows into error records."""
  block_rows = config.block_rows
  stream = itertools.chain.from_iterable(readers.iter_records(p) for p in config.inputs)
  pending: list = []
  pending_block = None
  for row, record in enumerate(itertools.islice(stream, num_rows)):
    block = row // block_rows
    if block not in todo:
      continue
    if row in row_errors:
      record = dataclasses.replace(record, error=row_errors[row])
    if pending and (block != pending_block or len(pending) == worker_pool.TASK_ROWS):
      yield pending_block, pending
      pending = []
    pending_block = block
    pending.append(record)
  if pending:
    yield pending_block, pending


def _process_blocks(config: block_plan.PrepareConfig, output: str, kv, num_rows: int,
                    todo: set[int], workers: int, progress: progress_lib.Progress, label: str,
                    row_errors: dict, record_timeout_s: float | None) -> tuple[int, int]:
  """Featurises and writes the blocks in `todo`; returns (valid rows, error rows)."""
  arrays = store.create_arrays(output, num_rows, config.block_rows, config.max_elements,
                               config.structures)
  split = block_plan.split_assignment(num_rows, config.seed, config.test_fraction)
  fields = schema.fields(config.max_elements, config.structures)
  errors = 0

  def report(new_errors: list, rows: int = 0) -> None:
    nonlocal errors
    for error in new_errors:
      if errors < _LOG_ERRORS:
        logging.warning("%s error: %s", label, error["reason"])
      errors += 1
    progress.advance(rows, len(new_errors))

  buffer = None
  results = worker_pool.run_tasks(
      _tasks(config, num_rows, todo, row_errors), workers, record_timeout_s,
      max_elements=config.max_elements, max_reflections=config.max_reflections,
      max_xrd_work=config.max_xrd_work, xrd_engine=config.xrd_engine,
      store_structure=config.store_structures)
  with block_writer.BlockWriter(arrays, kv, config.max_reflections, report) as writer:
    for block, records, features in results:
      if buffer is None or buffer.block != block:
        start = block * config.block_rows
        buffer = block_writer.BlockBuffer(block, start, min(start + config.block_rows, num_rows),
                                          split, fields, config.structures)
      before = len(buffer.errors)
      for record, result in zip(records, features):
        buffer.add(record, result, config.min_formation_energy)
      report(buffer.errors[before:], len(records))
      if buffer.filled == buffer.stop - buffer.start:
        writer.add(buffer)
        buffer = None
    writer.finish()
  if buffer is not None:
    raise RuntimeError(f"Inputs ended early: block {buffer.block} has {buffer.filled} of "
                       f"{buffer.stop - buffer.start} rows; did an input file change?")
  progress.advance(0, 0, force=True)
  return writer.valid, errors


def prepare_dataset(inputs: Sequence[str], output: str, *, workers: int | None = None,
                    limit: int | None = None, seed: int = 0, test_fraction: float = 0.1,
                    max_elements: int = schema.DEFAULT_MAX_ELEMENTS,
                    block_rows: int = schema.DEFAULT_BLOCK_ROWS,
                    min_formation_energy: float | None = None, shard: int = 0,
                    num_shards: int = 1, log_every_s: float = 10.0,
                    max_reflections: float = schema.DEFAULT_MAX_REFLECTIONS,
                    max_xrd_work: float = schema.DEFAULT_MAX_XRD_WORK,
                    allow_duplicate_ids: bool = False,
                    record_timeout_s: float | None = DEFAULT_RECORD_TIMEOUT_S,
                    xrd_engine: str = DEFAULT_XRD_ENGINE, store_structures: bool = False,
                    structure_sites: int = schema.DEFAULT_STRUCTURE_SITES,
                    structure_reflections: int = schema.DEFAULT_STRUCTURE_REFLECTIONS) -> dict:
  """Featurises `inputs` into the dataset at `output` (see module docstring).

  max_reflections, max_xrd_work: per-record XRD size limits (featurize.check_xrd_size); a larger
  cell is an error row. allow_duplicate_ids: keep the first row of a repeated material_id and
  make the others error rows (default: refuse the inputs). record_timeout_s: a record taking
  longer is an error row (0 or None: no limit). xrd_engine: "pymatgen" (XRDCalculator in the
  workers) or "jax" (workers return structure arrays, the main process simulates the patterns
  with xxact_jax.xrd_engine in batches on the default JAX device); recorded in the plan (a resume
  must use the same engine) and in metadata.json. store_structures: also store each structure,
  padded to structure_sites site entries and structure_reflections reflections
  (schema.structure_fields), for data.xrd_source="simulated"; a larger one keeps only its pattern.

  Returns:
    The summary: rows, blocks done now / before, valid and error counts, seconds,
    rows/s, and whether the dataset is complete (all shards done).
  """
  if not inputs:
    raise ValueError("No inputs given.")
  for path in inputs:
    readers.input_format(path)   # fails early, naming a missing or unknown input
  # 1 makes every row a test row: a held-out file to evaluate on (python -m xxact_jax.evaluate).
  if not 0 <= test_fraction <= 1:
    raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}.")
  if not 0 <= shard < num_shards:
    raise ValueError(f"shard must be in [0, num_shards={num_shards}), got {shard}.")
  if max_elements < 1 or block_rows < 1 or (limit is not None and limit < 1):
    raise ValueError("max_elements, block_rows and limit must be positive.")
  if not max_reflections > 0 or not max_xrd_work > 0:
    raise ValueError("max_reflections and max_xrd_work must be positive.")
  if record_timeout_s is not None and record_timeout_s < 0:
    raise ValueError(f"record_timeout_s must be >= 0, got {record_timeout_s}.")
  if xrd_engine not in XRD_ENGINES:
    raise ValueError(f"xrd_engine must be one of {list(XRD_ENGINES)}, got {xrd_engine!r}.")
  if structure_sites < 1 or structure_reflections < 1:
    raise ValueError("structure_sites and structure_reflections must be positive.")
  workers = (os.cpu_count() or 1) if workers is None else workers
  config = block_plan.PrepareConfig(
      tuple(os.path.abspath(p) for p in inputs), limit, seed, test_fraction, max_elements,
      block_rows, min_formation_energy, max_reflections, max_xrd_work, allow_duplicate_ids,
      xrd_engine, store_structures, structure_sites, structure_reflections)
  start = time.monotonic()
  kv = store.open_kvstore(output)
  plan = block_plan.load_or_make_plan(kv, config, output)
  num_rows = plan["num_rows"]
  num_blocks = -(-num_rows // block_rows)

  mine = {b for b in range(num_blocks) if b % num_shards == shard}
  done_before = mine & block_plan.done_blocks(kv)
  todo = mine - done_before
  todo_rows = sum(min(block_rows, num_rows - b * block_rows) for b in todo)
  label = f"[shard {shard}/{num_shards}]"
  logging.info("%s %d rows in %d blocks; this shard: %d blocks, %d already done, %d rows to do "
               "on %d workers.", label, num_rows, num_blocks, len(mine), len(done_before),
               todo_rows, workers)
  # No ETA before two tasks per worker finished: spawning workers and importing pymatgen made
  # the first ETA of a 37-minute run read 8 hours.
  progress = progress_lib.Progress(
      todo_rows, label, unit="rows", interval=log_every_s,
      warmup=2 * worker_pool.TASK_ROWS * max(workers, 1) if workers > 1 else 0,
      emit=lambda line: logging.info("%s", line))
  row_errors = {int(row): reason for row, reason in plan.get("duplicate_rows", {}).items()}
  valid, errors = _process_blocks(config, output, kv, num_rows, todo, workers, progress, label,
                                  row_errors, record_timeout_s or None)

  complete = block_plan.done_blocks(kv) >= set(range(num_blocks))
  metadata = finalize(output, plan) if complete else None
  seconds = time.monotonic() - start
  summary = {"output": output, "rows": num_rows, "shard": shard, "num_shards": num_shards,
             "blocks_done_now": len(todo), "blocks_done_before": len(done_before),
             "rows_featurised_now": todo_rows, "valid_now": valid, "errors_now": errors,
             "seconds": round(seconds, 1),
             "rows_per_second": round(todo_rows / max(seconds, 1e-9), 2),
             "complete": complete}
  if metadata is not None:
    summary.update(valid_total=metadata["counts"]["valid"],
                   errors_total=metadata["counts"]["errors"],
                   train=metadata["splits"]["train"], test=metadata["splits"]["test"])
  logging.info("%s summary: %s", label, json.dumps(summary))
  return summary


def finalize(output: str, plan: dict, extra_metadata: dict | None = None) -> dict:
  """Writes errors.jsonl, then metadata.json with counts and train-split label statistics
  (and `extra_metadata`, e.g. where a subset came from)."""
  kv = store.open_kvstore(output)
  config = plan["config"]
  padding = block_plan.PrepareConfig(**{
      k: v for k, v in config.items()
      if k in block_plan.PrepareConfig.__dataclass_fields__}).structures
  errors = []
  for key in store.list_keys(kv, schema.PROGRESS_DIR):
    errors.extend(store.read_json(kv, key)["errors"])
  errors.sort(key=lambda e: e["row"])
  kv.write(schema.ERRORS_FILE,
           "".join(json.dumps(e) + "\n" for e in errors).encode()).result()

  names = ("valid", "split", *constants.REGRESSION_TARGETS, *constants.CLASSIFICATION_TARGETS)
  arrays = store.open_arrays(output, names)
  columns = {n: store.read_full(a) for n, a in arrays.items()}
  valid = columns["valid"].astype(bool)
  train = valid & (columns["split"] == schema.SPLIT_CODES["train"])
  test = valid & (columns["split"] == schema.SPLIT_CODES["test"])
  metadata = {
      "schema_version": schema.SCHEMA_VERSION,
      "max_elements": config["max_elements"],
      "grid": {"two_theta_min": constants.TWO_THETA_MIN, "two_theta_max": constants.TWO_THETA_MAX,
               "step": constants.TWO_THETA_STEP, "num_points": constants.NUM_XRD_POINTS},
      "sigma": constants.XRD_SIGMA,
      "wavelength": constants.XRD_WAVELENGTH,
      "max_intensity": constants.XRD_MAX_INTENSITY,
      "symprec": 0.1,
      "xrd_engine": config.get("xrd_engine", "pymatgen"),
      "counts": {"rows": plan["num_rows"], "valid": int(valid.sum()), "errors": len(errors)},
      "splits": {"train": int(train.sum()), "test": int(test.sum()), "seed": config["seed"],
                 "test_fraction": config["test_fraction"], "codes": schema.SPLIT_CODES},
      "label_stats": stats_lib.label_stats(columns, train),
      "block_rows": config["block_rows"],
      "inputs": config["inputs"],
      "limit": config["limit"],
      "min_formation_energy": config["min_formation_energy"],
      "fields": {n: {"dtype": f.dtype, "row_shape": list(f.row_shape)}
                 for n, f in schema.fields(config["max_elements"], padding).items()},
      "structures": None,
  }
  if padding is not None:
    stored = store.read_full(store.open_arrays(output, ("has_structure",))["has_structure"])
    metadata["structures"] = {
        **padding, "stored": int((stored.astype(bool) & valid).sum()),
        "reflection_two_theta_range": list(structures_lib.reflection_two_theta_range()),
        "wavelength_angstrom": constants.CU_KA_LINES[0],
        "scattering": structures_lib.scattering_metadata()}
  metadata.update(extra_metadata or {})
  store.write_json(kv, schema.METADATA_FILE, metadata)
  return metadata
