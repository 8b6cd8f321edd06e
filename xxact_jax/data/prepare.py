"""Structures -> TensorStore dataset: multiprocess featurisation, resumable blocks, host shards.

Rows are processed in blocks of `block_rows` (one storage chunk of every array).
A block is written with one write per array; after the writes commit, a marker
`progress/block_NNNNNN.json` (with the block's errors) is written, so a killed run
re-run with the same arguments redoes only unmarked blocks. With
`num_shards=N`, shard i owns blocks b with b % N == i; the arrays are created at
full size by every shard, so N processes on N hosts fill disjoint chunks. The
process that finds every block marked writes errors.jsonl, label statistics and,
last, metadata.json (its presence means the dataset is complete).
"""

import collections
import concurrent.futures
import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import time
from typing import Iterable, Sequence

from absl import logging
import numpy as np

from xxact_jax import constants
from xxact_jax.data import readers
from xxact_jax.data import schema
from xxact_jax.data import store
from xxact_jax.data import stats as stats_lib

_TASK_ROWS = 16          # records per worker task: small, so workers stay balanced
_TASKS_PER_WORKER = 4    # in-flight tasks per worker (bounded memory for 5M-row inputs)
_LOG_ERRORS = 20         # errors also logged individually, up to this many


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """Arguments that define a dataset; a resumed run must repeat them exactly."""
  inputs: tuple
  limit: int | None = None
  seed: int = 0
  test_fraction: float = 0.1
  max_elements: int = schema.DEFAULT_MAX_ELEMENTS
  block_rows: int = schema.DEFAULT_BLOCK_ROWS
  min_formation_energy: float | None = None


def split_assignment(num_rows: int, seed: int, test_fraction: float) -> np.ndarray:
  """Seeded random split (0 = train, 1 = test), identical in every shard."""
  split = np.zeros(num_rows, np.int8)
  num_test = int(round(num_rows * test_fraction))
  split[np.random.default_rng(seed).permutation(num_rows)[:num_test]] = schema.SPLIT_CODES["test"]
  return split


# ---------------------------------------------------------------- workers


def _init_worker() -> None:
  import warnings  # pylint: disable=g-import-not-at-top
  warnings.simplefilter("ignore")
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top,unused-import


def featurize_records(records: Sequence[readers.RawRecord], max_elements: int) -> list:
  """Featurises records; each result is a feature dict or an error string."""
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  results = []
  for record in records:
    if record.error:
      results.append(record.error)
      continue
    try:
      structure = featurize.structure_from_payload(record.kind, record.payload)
      results.append(featurize.featurize_structure(structure, max_elements))
    except featurize.FeaturizationError as e:
      results.append(f"{record.location}: {e}")
    except Exception as e:  # a library bug on one record must not stop a 5M-row run
      results.append(f"{record.location}: unexpected {type(e).__name__}: {e}")
  return results


# ---------------------------------------------------------------- plan


def _make_plan(config: PrepareConfig) -> dict:
  counts = []
  for path in config.inputs:   # inputs past --limit are not read
    if config.limit is not None and sum(counts) >= config.limit:
      break
    counts.append(readers.count_records(path))
  total = sum(counts)
  num_rows = total if config.limit is None else min(total, config.limit)
  if num_rows == 0:
    raise ValueError(f"Inputs {list(config.inputs)} hold no records.")
  return {"config": dataclasses.asdict(config), "input_counts": counts, "num_rows": num_rows,
          "schema_version": schema.SCHEMA_VERSION}


def _load_or_make_plan(kv, config: PrepareConfig, output: str) -> dict:
  existing = store.read_json(kv, schema.PLAN_FILE)
  wanted = json.loads(json.dumps(dataclasses.asdict(config)))
  if existing is not None:
    if existing["config"] != wanted:
      changed = sorted(k for k in wanted if existing["config"].get(k) != wanted[k])
      raise ValueError(f"Dataset {output!r} was started with different arguments ({changed}); "
                       f"use the same arguments to resume or a new --output.")
    return existing
  plan = _make_plan(config)
  store.write_json(kv, schema.PLAN_FILE, plan)
  return plan


def _marker_key(block: int) -> str:
  return f"{schema.PROGRESS_DIR}block_{block:06d}.json"


def _done_blocks(kv) -> set[int]:
  keys = store.list_keys(kv, schema.PROGRESS_DIR)
  return {int(k.rsplit("_", 1)[1].split(".")[0]) for k in keys}


# ---------------------------------------------------------------- writing


class BlockBuffer:
  """Rows of one block, filled in order, written with one write per array."""

  def __init__(self, block: int, start: int, stop: int, split: np.ndarray, fields: dict):
    self.block, self.start, self.stop = block, start, stop
    n = stop - start
    self.data = {name: np.full((n, *f.row_shape), f.fill_value, dtype=f.dtype)
                 for name, f in fields.items()}
    self.data["split"][:] = split[start:stop]
    self.errors: list[dict] = []
    self.filled = 0

  def add(self, record: readers.RawRecord, result, min_formation_energy) -> None:
    i = self.filled
    self.filled += 1
    try:
      self.data["material_id"][i] = schema.encode_material_id(record.material_id)
    except ValueError as e:
      result = f"{record.location}: {e}"
    if isinstance(result, str):
      self.errors.append({"row": self.start + i, "material_id": record.material_id,
                          "reason": result})
      return
    self.data["valid"][i] = 1
    self.data["species"][i] = result["species"]
    self.data["fractions"][i] = result["fractions"]
    self.data["xrd"][i] = result["xrd"]
    self.data["crystal_system"][i] = result["crystal_system"]
    self.data["spacegroup_number"][i] = result["spacegroup_number"]
    e_form = record.labels["formation_energy_per_atom"]
    if min_formation_energy is not None and e_form < min_formation_energy:
      e_form = math.nan   # filtered label: stored as missing, the row stays
    self.data["formation_energy_per_atom"][i] = e_form
    self.data["band_gap"][i] = record.labels["band_gap"]

  def write(self, arrays: dict, kv) -> None:
    futures = [arrays[name][self.start:self.stop].write(value)
               for name, value in self.data.items()]
    for future in futures:
      future.result()
    # The marker follows the committed data: its presence means the block is durable.
    store.write_json(kv, _marker_key(self.block),
                     {"rows": [self.start, self.stop], "valid": int(self.data["valid"].sum()),
                      "errors": self.errors})


# ---------------------------------------------------------------- progress


class _Progress:
  """Logs rows/s and ETA every `every_s` seconds."""

  def __init__(self, total: int, label: str, every_s: float):
    self.total, self.label, self.every_s = total, label, every_s
    self.done = self.errors = 0
    self.start = self.last = time.monotonic()

  def update(self, rows: int, errors: int, force: bool = False) -> None:
    self.done += rows
    self.errors += errors
    now = time.monotonic()
    if force or now - self.last >= self.every_s:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      logging.info("%s %d/%d rows (%.1f%%), %.1f rows/s, ETA %s, errors %d", self.label,
                   self.done, self.total, 100 * self.done / max(self.total, 1), rate,
                   _format_seconds(eta), self.errors)


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# ---------------------------------------------------------------- main loop


def _record_stream(config: PrepareConfig, num_rows: int) -> Iterable[readers.RawRecord]:
  stream = itertools.chain.from_iterable(readers.iter_records(p) for p in config.inputs)
  return itertools.islice(stream, num_rows)


def _tasks(config: PrepareConfig, num_rows: int, todo: set[int]):
  """Yields (block, records) groups of at most _TASK_ROWS records from blocks in `todo`."""
  block_rows = config.block_rows
  pending: list = []
  pending_block = None
  for row, record in enumerate(_record_stream(config, num_rows)):
    block = row // block_rows
    if block not in todo:
      continue
    if pending and (block != pending_block or len(pending) == _TASK_ROWS):
      yield pending_block, pending
      pending = []
    pending_block = block
    pending.append(record)
  if pending:
    yield pending_block, pending


def _run_tasks(tasks, max_elements: int, workers: int):
  """Yields (block, records, results) in input order, featurising on `workers` processes."""
  if workers <= 1:
    _init_worker()
    for block, records in tasks:
      yield block, records, featurize_records(records, max_elements)
    return
  context = multiprocessing.get_context("spawn")  # TensorStore threads make fork unsafe
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                              initializer=_init_worker) as pool:
    in_flight = collections.deque()
    tasks = iter(tasks)
    for block, records in tasks:
      in_flight.append((block, records, pool.submit(featurize_records, records, max_elements)))
      if len(in_flight) >= workers * _TASKS_PER_WORKER:
        block, records, future = in_flight.popleft()
        yield block, records, future.result()
    while in_flight:
      block, records, future = in_flight.popleft()
      yield block, records, future.result()


def _process_blocks(config: PrepareConfig, output: str, kv, num_rows: int, todo: set[int],
                    workers: int, progress: "_Progress", label: str) -> tuple[int, int]:
  """Featurises and writes the blocks in `todo`; returns (valid rows, error rows)."""
  arrays = store.create_arrays(output, num_rows, config.block_rows, config.max_elements)
  split = split_assignment(num_rows, config.seed, config.test_fraction)
  fields = schema.fields(config.max_elements)
  block_rows = config.block_rows
  buffer = None
  valid = errors = 0
  for block, records, results in _run_tasks(_tasks(config, num_rows, todo), config.max_elements,
                                            workers):
    if buffer is None or buffer.block != block:
      b_start = block * block_rows
      buffer = BlockBuffer(block, b_start, min(b_start + block_rows, num_rows), split, fields)
    before = len(buffer.errors)
    for record, result in zip(records, results):
      buffer.add(record, result, config.min_formation_energy)
    for error in buffer.errors[before:]:
      if errors < _LOG_ERRORS:
        logging.warning("%s error: %s", label, error["reason"])
      errors += 1
    progress.update(len(records), len(buffer.errors) - before)
    if buffer.filled == buffer.stop - buffer.start:
      buffer.write(arrays, kv)
      valid += int(buffer.data["valid"].sum())
      buffer = None
  if buffer is not None:
    raise RuntimeError(f"Inputs ended early: block {buffer.block} has {buffer.filled} of "
                       f"{buffer.stop - buffer.start} rows; did an input file change?")
  progress.update(0, 0, force=True)
  return valid, errors


def prepare_dataset(inputs: Sequence[str], output: str, *, workers: int | None = None,
                    limit: int | None = None, seed: int = 0, test_fraction: float = 0.1,
                    max_elements: int = schema.DEFAULT_MAX_ELEMENTS,
                    block_rows: int = schema.DEFAULT_BLOCK_ROWS,
                    min_formation_energy: float | None = None, shard: int = 0,
                    num_shards: int = 1, log_every_s: float = 10.0) -> dict:
  """Featurises `inputs` into the dataset at `output` (see module docstring).

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
  workers = (os.cpu_count() or 1) if workers is None else workers
  config = PrepareConfig(tuple(os.path.abspath(p) for p in inputs), limit, seed, test_fraction,
                         max_elements, block_rows, min_formation_energy)
  start = time.monotonic()
  kv = store.open_kvstore(output)
  plan = _load_or_make_plan(kv, config, output)
  num_rows = plan["num_rows"]
  num_blocks = -(-num_rows // block_rows)

  mine = {b for b in range(num_blocks) if b % num_shards == shard}
  done_before = mine & _done_blocks(kv)
  todo = mine - done_before
  todo_rows = sum(min(block_rows, num_rows - b * block_rows) for b in todo)
  label = f"[shard {shard}/{num_shards}]"
  logging.info("%s %d rows in %d blocks; this shard: %d blocks, %d already done, %d rows to do "
               "on %d workers.", label, num_rows, num_blocks, len(mine), len(done_before),
               todo_rows, workers)
  progress = _Progress(todo_rows, label, log_every_s)
  valid, errors = _process_blocks(config, output, kv, num_rows, todo, workers, progress, label)

  complete = _done_blocks(kv) >= set(range(num_blocks))
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
      "counts": {"rows": plan["num_rows"], "valid": int(valid.sum()), "errors": len(errors)},
      "splits": {"train": int(train.sum()), "test": int(test.sum()), "seed": config["seed"],
                 "test_fraction": config["test_fraction"], "codes": schema.SPLIT_CODES},
      "label_stats": stats_lib.label_stats(columns, train),
      "block_rows": config["block_rows"],
      "inputs": config["inputs"],
      "limit": config["limit"],
      "min_formation_energy": config["min_formation_energy"],
      "fields": {n: {"dtype": f.dtype, "row_shape": list(f.row_shape)}
                 for n, f in schema.fields(config["max_elements"]).items()},
  }
  metadata.update(extra_metadata or {})
  store.write_json(kv, schema.METADATA_FILE, metadata)
  return metadata
