"""Structures -> TensorStore dataset: multiprocess featurisation, resumable blocks, host shards.

Rows are processed in blocks of `block_rows` (one storage chunk of every array).
A block is written with one write per array; after the writes commit, a marker
`progress/block_NNNNNN.json` (with the block's errors) is written, so a killed run
re-run with the same arguments redoes only unmarked blocks. With
`num_shards=N`, shard i owns blocks b with b % N == i; the arrays are created at
full size by every shard, so N processes on N hosts fill disjoint chunks. The
process that finds every block marked writes errors.jsonl, label statistics and,
last, metadata.json (its presence means the dataset is complete).

Faults: the plan records a sha256 of every input (a resume over changed inputs is refused) and
refuses duplicate material ids; workers die with the parent (SIGKILL of prepare leaves no
orphans); a record whose XRD would be too large, that runs past --record_timeout_s, or whose
worker dies (out of memory, a native crash) becomes an error row and the run goes on.

XRD (xrd_engine): "jax" (default) has the workers return each structure's arrays and simulates
the patterns of whole blocks in the main process (xxact_jax.xrd_engine, imported only then) on a
background thread before writing them; "pymatgen" computes them in the workers. The per-record
guards run in the workers either way; the engine's own time is bounded by max_reflections.
"""

import collections
import concurrent.futures
import concurrent.futures.process
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import threading
import time
from typing import Iterable, Sequence

from absl import logging
import numpy as np

from xxact_jax import constants
from xxact_jax import progress as progress_lib
from xxact_jax.data import processes
from xxact_jax.data import readers
from xxact_jax.data import schema
from xxact_jax.data import store
from xxact_jax.data import stats as stats_lib
from xxact_jax.data import structures as structures_lib

_TASK_ROWS = 16          # records per worker task: small, so workers stay balanced
_TASKS_PER_WORKER = 4    # in-flight tasks per worker (bounded memory for 5M-row inputs)
_LOG_ERRORS = 20         # errors also logged individually, up to this many
DEFAULT_RECORD_TIMEOUT_S = 300.0
XRD_ENGINES = ("pymatgen", "jax")
DEFAULT_XRD_ENGINE = "jax"
# Beyond TASK_ROWS × record timeout, how long a task may overrun (stuck in native code, where the
# worker's own alarm cannot interrupt it) before the parent kills the workers; and how long a
# restarted pool may take to start (spawn + pymatgen import).
_OVERRUN_S = 60.0
_STARTUP_S = 300.0
_HASH_CHUNK = 1 << 20


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
  # Fields added later: a plan.json without them means the default (see _load_or_make_plan).
  max_reflections: float = schema.DEFAULT_MAX_REFLECTIONS
  max_xrd_work: float = schema.DEFAULT_MAX_XRD_WORK
  allow_duplicate_ids: bool = False
  # Where the XRD patterns come from: "pymatgen" (XRDCalculator in the workers; also what a plan
  # without this field means) or "jax" (xxact_jax.xrd_engine, batched in the main process).
  xrd_engine: str = "pymatgen"
  # Crystal structures stored beside the patterns (schema.structure_fields), padded to these sizes.
  store_structures: bool = False
  structure_sites: int = schema.DEFAULT_STRUCTURE_SITES
  structure_reflections: int = schema.DEFAULT_STRUCTURE_REFLECTIONS

  @property
  def structures(self) -> dict | None:
    """The padding of the stored structures, or None when they are not stored."""
    if not self.store_structures:
      return None
    return {"sites": self.structure_sites, "reflections": self.structure_reflections}


def split_assignment(num_rows: int, seed: int, test_fraction: float) -> np.ndarray:
  """Seeded random split (0 = train, 1 = test), identical in every shard."""
  split = np.zeros(num_rows, np.int8)
  num_test = int(round(num_rows * test_fraction))
  split[np.random.default_rng(seed).permutation(num_rows)[:num_test]] = schema.SPLIT_CODES["test"]
  return split


# ---------------------------------------------------------------- workers


def _init_quiet() -> None:
  import warnings  # pylint: disable=g-import-not-at-top
  warnings.simplefilter("ignore")
  # spglib prints "spglib: ... failed." from C to stderr for structures whose symmetry search
  # needs a retry; a failure that matters reaches errors.jsonl through the exception anyway.
  os.environ.setdefault("SPGLIB_WARNING", "OFF")


_die_with_parent = processes.die_with_parent


def _init_worker(parent_pid: int) -> None:
  _die_with_parent(parent_pid)
  _init_quiet()
  # pymatgen imported once per worker, before its first record's time limit starts.
  from xxact_jax.data import featurize  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


class _RecordTimeout(BaseException):
  """Raised in a worker when a record runs past its time limit (a BaseException, so the
  `except Exception` blocks inside pymatgen and featurize do not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
  """Raises _RecordTimeout in this thread after `seconds` (SIGALRM; Python-level code only).

  Active only on the main thread and when no other SIGALRM timer or handler is in use (an
  in-process run must not clobber e.g. pytest-timeout's).
  """
  usable = (seconds and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None))
  if not usable:
    yield
    return
  armed, fired = True, False

  def on_alarm(signum, frame):  # pylint: disable=unused-argument
    nonlocal fired
    if armed:   # a late signal after the record finished is ignored
      fired = True
      raise _RecordTimeout()

  signal.signal(signal.SIGALRM, on_alarm)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    try:   # the alarm may still fire here; the timer and handler are reset regardless
      armed = False
    finally:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, signal.SIG_DFL)
  if fired:   # the limit passed, but code that catches everything (a bare except) swallowed it
    raise _RecordTimeout()


def featurize_records(records: Sequence[readers.RawRecord], max_elements: int, *,
                      max_reflections: float = schema.DEFAULT_MAX_REFLECTIONS,
                      max_xrd_work: float = schema.DEFAULT_MAX_XRD_WORK,
                      record_timeout_s: float | None = None,
                      xrd_engine: str = "pymatgen", store_structure: bool = False) -> list:
  """Featurises records; each result is a feature dict or an error string.

  With xrd_engine="jax" a feature dict holds the structure's arrays (`structure`) instead of
  `xrd`; the caller simulates the patterns (_simulate_xrd). store_structure: it also holds them,
  and the point-group `rotations`, for the stored structure arrays.
  """
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  results = []
  for record in records:
    if record.error:
      results.append(record.error)
      continue
    try:
      with _time_limit(record_timeout_s):
        structure = featurize.structure_from_payload(record.kind, record.payload)
        result = featurize.featurize_structure(structure, max_elements,
                                               max_reflections=max_reflections,
                                               max_xrd_work=max_xrd_work,
                                               xrd_engine=xrd_engine,
                                               store_structure=store_structure)
    except _RecordTimeout:
      result = (f"{record.location}: featurisation took longer than {record_timeout_s:g} s "
                f"(--record_timeout_s)")
    except featurize.FeaturizationError as e:
      result = f"{record.location}: {e}"
    except Exception as e:  # a library bug on one record must not stop a 5M-row run
      result = f"{record.location}: unexpected {type(e).__name__}: {e}"
    results.append(result)
  return results


# ---------------------------------------------------------------- plan


def input_fingerprint(path: str) -> dict:
  """{"path", "bytes", "sha256"} of an input's content (mtime-independent).

  The full file is hashed (streamed; ~1 s per GB, far less than featurising it; the same digest
  as sha256sum); for a CIF directory, the names and bytes of the files the reader uses (*.cif
  and labels.csv).
  """
  digest, size = hashlib.sha256(), 0
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path)
                   if n.lower().endswith(".cif") or n == readers.CIF_LABELS_FILE)
    files = [(n, os.path.join(path, n)) for n in names]
  else:
    files = [(None, path)]
  for name, file_path in files:
    if name is not None:   # a directory: name and length delimit each file
      digest.update(f"{name}\0{os.path.getsize(file_path)}\0".encode("utf-8", "surrogateescape"))
    with open(file_path, "rb") as f:
      while chunk := f.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
  return {"path": path, "bytes": size, "sha256": digest.hexdigest()}   # a file: = sha256sum


def _check_inputs_unchanged(plan: dict, output: str) -> None:
  saved = plan.get("input_fingerprints")
  if saved is None:
    logging.warning("Dataset %r was planned before inputs were fingerprinted: cannot check that "
                    "its inputs are unchanged; resuming anyway.", output)
    return
  for old in saved:
    new = input_fingerprint(old["path"])
    if new["sha256"] != old["sha256"]:
      raise ValueError(
          f"Input {old['path']!r} changed since dataset {output!r} was started (then "
          f"{old['bytes']} bytes, sha256 {old['sha256'][:16]}; now {new['bytes']} bytes, sha256 "
          f"{new['sha256'][:16]}); use the same inputs to resume or a new --output.")


def _duplicate_rows(inputs: Sequence[str], ids: list[list[str]], num_rows: int) -> dict:
  """{row: reason} for every row whose material_id already appeared in an earlier row."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  flat = pd.Series(list(itertools.islice(itertools.chain.from_iterable(ids), num_rows)),
                   dtype=object)
  codes, _ = pd.factorize(flat)   # hashing in C: 5M ids in seconds, no Python dict of them
  _, first_index = np.unique(codes, return_index=True)
  first = first_index[codes]
  rows = np.flatnonzero((first != np.arange(len(codes))) & (flat.to_numpy() != ""))
  if not len(rows):
    return {}
  starts = np.cumsum([0] + [len(i) for i in ids])
  locators = {}

  def locate(row: int) -> str:
    index = int(np.searchsorted(starts, row, side="right")) - 1
    if index not in locators:
      locators[index] = readers.record_locator(inputs[index])
    return locators[index](row - int(starts[index]))

  return {int(row): f"{locate(row)}: duplicate material_id {flat[row]!r} of row {first[row]} "
                    f"({locate(int(first[row]))})" for row in rows}


def _make_plan(config: PrepareConfig) -> dict:
  ids, fingerprints = [], []
  for path in config.inputs:   # inputs past --limit are not read
    if config.limit is not None and sum(map(len, ids)) >= config.limit:
      break
    ids.append(readers.record_ids(path))
    fingerprints.append(input_fingerprint(path))
  counts = [len(i) for i in ids]
  total = sum(counts)
  num_rows = total if config.limit is None else min(total, config.limit)
  if num_rows == 0:
    raise ValueError(f"Inputs {list(config.inputs)} hold no records.")
  duplicates = _duplicate_rows(config.inputs, ids, num_rows)
  if duplicates and not config.allow_duplicate_ids:
    shown = "; ".join(list(duplicates.values())[:5])
    raise ValueError(
        f"The inputs hold {len(duplicates)} duplicate material_id(s) (a material could sit in "
        f"both train and test): {shown}{'; ...' if len(duplicates) > 5 else ''}. Remove them, or "
        f"pass --allow_duplicate_ids to keep the first of each and make the others error rows.")
  return {"config": dataclasses.asdict(config), "input_counts": counts, "num_rows": num_rows,
          "input_fingerprints": fingerprints,
          "duplicate_rows": {str(row): reason for row, reason in duplicates.items()},
          "schema_version": schema.SCHEMA_VERSION}


def _unrelated_entry(kv, output: str) -> str | None:
  """An entry of `output` that is not part of a dataset being planned, or None when empty."""
  if "://" not in output:
    if os.path.isfile(output):
      return output
    names = sorted(os.listdir(output)) if os.path.isdir(output) else []
  else:
    names = sorted(k.decode() for k in kv.list().result())
  # plan.json's own temporary/lock files: a run killed while writing it may leave one.
  return next((n for n in names if not n.startswith(schema.PLAN_FILE)), None)


def _load_or_make_plan(kv, config: PrepareConfig, output: str) -> dict:
  existing = store.read_json(kv, schema.PLAN_FILE)
  if existing is None:
    stray = _unrelated_entry(kv, output)
    existing = store.read_json(kv, schema.PLAN_FILE)   # another shard may have planned meanwhile
    if existing is None and stray is not None:
      raise ValueError(f"--output {output!r} is not empty and holds no dataset (no "
                       f"{schema.PLAN_FILE}; found {stray!r}); choose a new or empty directory.")
  wanted = json.loads(json.dumps(dataclasses.asdict(config)))
  if existing is not None:
    defaults = json.loads(json.dumps(dataclasses.asdict(PrepareConfig(inputs=()))))
    saved = {**{k: defaults[k] for k in wanted if k not in existing["config"]},
             **existing["config"]}   # fields added since the plan was written: their defaults
    if saved != wanted:
      changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
      raise ValueError(f"Dataset {output!r} was started with different arguments ({changed}); "
                       f"use the same arguments to resume or a new --output.")
    _check_inputs_unchanged(existing, output)
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

  def __init__(self, block: int, start: int, stop: int, split: np.ndarray, fields: dict,
               structures: dict | None = None):
    self.block, self.start, self.stop = block, start, stop
    self.structures = structures
    n = stop - start
    self.data = {name: np.full((n, *f.row_shape), f.fill_value, dtype=f.dtype)
                 for name, f in fields.items()}
    self.data["split"][:] = split[start:stop]
    self.fields = fields
    self.errors: list[dict] = []
    self.filled = 0
    # (row in block, record, structure arrays) of rows whose XRD the JAX engine still owes.
    self.pending_xrd: list = []

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
    if "xrd" in result:
      self.data["xrd"][i] = result["xrd"]
    else:   # --xrd_engine=jax: filled in by _simulate_xrd before the block is written
      self.pending_xrd.append((i, record, result["structure"]))
    if self.structures is not None:
      packed = structures_lib.pack(*result["structure"], result["rotations"],
                                   **self.structures)
      # A structure too large for the padding is not stored (has_structure stays 0): training
      # reads its stored pattern instead. metadata.json counts the rows stored.
      if not isinstance(packed, str):
        for name, value in packed.items():
          self.data[name][i] = value
    self.data["crystal_system"][i] = result["crystal_system"]
    self.data["spacegroup_number"][i] = result["spacegroup_number"]
    e_form = record.labels["formation_energy_per_atom"]
    if min_formation_energy is not None and e_form < min_formation_energy:
      e_form = math.nan   # filtered label: stored as missing, the row stays
    self.data["formation_energy_per_atom"][i] = e_form
    self.data["band_gap"][i] = record.labels["band_gap"]

  def fail(self, i: int, record: readers.RawRecord, reason: str) -> None:
    """Turns row i, already added as valid, into an error row (its fields back to the fill)."""
    for name, field in self.fields.items():
      if name not in ("split", "material_id"):
        self.data[name][i] = field.fill_value
    self.errors.append({"row": self.start + i, "material_id": record.material_id,
                        "reason": reason})

  def write(self, arrays: dict, kv) -> None:
    if self.pending_xrd:
      raise RuntimeError(f"block {self.block}: {len(self.pending_xrd)} XRD patterns not simulated")
    futures = [arrays[name][self.start:self.stop].write(value)
               for name, value in self.data.items()]
    for future in futures:
      future.result()
    # The marker follows the committed data: its presence means the block is durable.
    store.write_json(kv, _marker_key(self.block),
                     {"rows": [self.start, self.stop], "valid": int(self.data["valid"].sum()),
                      "errors": self.errors})


# ---------------------------------------------------------------- progress


# ---------------------------------------------------------------- main loop


def _record_stream(config: PrepareConfig, num_rows: int) -> Iterable[readers.RawRecord]:
  stream = itertools.chain.from_iterable(readers.iter_records(p) for p in config.inputs)
  return itertools.islice(stream, num_rows)


def _tasks(config: PrepareConfig, num_rows: int, todo: set[int], row_errors: dict):
  """Yields (block, records) groups of at most _TASK_ROWS records from blocks in `todo`.

  `row_errors` ({row: reason}, e.g. duplicate ids) turns those rows into error records.
  """
  block_rows = config.block_rows
  pending: list = []
  pending_block = None
  for row, record in enumerate(_record_stream(config, num_rows)):
    block = row // block_rows
    if block not in todo:
      continue
    if row in row_errors:
      record = dataclasses.replace(record, error=row_errors[row])
    if pending and (block != pending_block or len(pending) == _TASK_ROWS):
      yield pending_block, pending
      pending = []
    pending_block = block
    pending.append(record)
  if pending:
    yield pending_block, pending


class _WorkerLost(Exception):
  """The pool lost its unfinished tasks: a worker died, or one hung past the deadline."""


class _WorkerPool:
  """A spawn ProcessPoolExecutor that is restarted when a worker dies or hangs.

  Each record has a soft time limit inside its worker (_time_limit). A worker stuck in native
  code ignores it; the parent notices when no task finishes for TASK_ROWS × limit + _OVERRUN_S
  and kills the workers. A dead worker (OOM killer, segfault) breaks the executor. Either way
  the unfinished tasks are redone one record at a time, so the record that kills or hangs a
  worker again becomes an error row and the rest are featurised.
  """

  def __init__(self, workers: int, featurize_kwargs: dict, record_timeout_s: float | None):
    self.workers, self.kwargs, self.timeout_s = workers, featurize_kwargs, record_timeout_s
    self.task_deadline_s = (_TASK_ROWS * record_timeout_s + _OVERRUN_S
                            if record_timeout_s else None)
    self.executor = None
    self._start()

  def _start(self) -> None:
    context = multiprocessing.get_context("spawn")  # TensorStore threads make fork unsafe
    # Workers are spawned by the thread that submits (PR_SET_PDEATHSIG follows that thread).
    self.executor = concurrent.futures.ProcessPoolExecutor(
        self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    self.started = self.last_done = time.monotonic()
    self.warm = False

  def _finished(self, executor, future) -> None:   # runs on the executor's thread
    if executor is self.executor:   # not a late callback from a pool already replaced
      self.last_done = time.monotonic()
      if not future.cancelled() and future.exception() is None:
        self.warm = True

  def submit(self, records: list):
    try:
      future = self.executor.submit(featurize_records, records, **self.kwargs,
                                    record_timeout_s=self.timeout_s)
    except concurrent.futures.process.BrokenProcessPool as e:
      future = concurrent.futures.Future()
      future.set_exception(e)
    future.submitted = time.monotonic()
    future.add_done_callback(functools.partial(self._finished, self.executor))
    return future

  def wait(self, future) -> list:
    """The results of `future`; _WorkerLost when the pool broke or stalled."""
    while True:
      try:
        return future.result(timeout=None if self.task_deadline_s is None else 1.0)
      except concurrent.futures.TimeoutError:
        allowed = self.task_deadline_s + (0 if self.warm else _STARTUP_S)
        if time.monotonic() - max(self.last_done, future.submitted) > allowed:
          raise _WorkerLost(f"no task finished for {allowed:g} s (a worker hung?)") from None
      except concurrent.futures.process.BrokenProcessPool:
        raise _WorkerLost("a worker process died (killed, e.g. by the out-of-memory killer, "
                          "or crashed)") from None

  def restart(self) -> None:
    # No public way to kill the workers of a ProcessPoolExecutor before Python 3.14.
    for process in list((getattr(self.executor, "_processes", None) or {}).values()):
      with contextlib.suppress(Exception):
        process.kill()
    self.executor.shutdown(wait=True, cancel_futures=True)
    self._start()

  def featurize_alone(self, record: readers.RawRecord):
    """One record on a fresh or healthy pool, with a hard deadline; restarts the pool on loss."""
    if not self.warm:   # start-up must not count against the record
      try:
        self.executor.submit(os.getpid).result(timeout=_STARTUP_S)
      except concurrent.futures.TimeoutError:
        pass
      except concurrent.futures.process.BrokenProcessPool as e:
        raise RuntimeError(f"Featurisation workers cannot start: {e}") from None
      self.warm = True
    future = self.submit([record])
    try:
      return future.result(
          timeout=None if self.timeout_s is None else self.timeout_s + _OVERRUN_S)[0]
    except concurrent.futures.TimeoutError:
      self.restart()
      return (f"{record.location}: featurisation did not finish within "
              f"{self.timeout_s + _OVERRUN_S:g} s; its worker was killed")
    except concurrent.futures.process.BrokenProcessPool:
      self.restart()
      return (f"{record.location}: the worker process died while featurising this record "
              f"(out of memory, or a crash in native code)")

  def close(self) -> None:
    self.executor.shutdown(wait=True, cancel_futures=True)


def _recover(pool: _WorkerPool, in_flight: collections.deque, reason: str) -> None:
  """Replaces the unfinished tasks of `in_flight` by their results, redone one record at a time."""
  def finished(pending) -> bool:
    return isinstance(pending, list) or (pending.done() and not pending.cancelled()
                                         and pending.exception() is None)
  lost = [i for i, (_, _, pending) in enumerate(in_flight) if not finished(pending)]
  logging.warning("%s; restarting the workers and redoing the %d records of %d unfinished "
                  "tasks one at a time.", reason, sum(len(in_flight[i][1]) for i in lost),
                  len(lost))
  pool.restart()
  for i, (block, records, pending) in enumerate(in_flight):
    results = ([pool.featurize_alone(r) for r in records] if i in lost
               else pending if isinstance(pending, list) else pending.result())
    in_flight[i] = (block, records, results)


def _run_tasks(tasks, max_elements: int, workers: int, featurize_kwargs: dict | None = None,
               record_timeout_s: float | None = None):
  """Yields (block, records, results) in input order, featurising on `workers` processes."""
  featurize_kwargs = dict(featurize_kwargs or {}, max_elements=max_elements)
  if workers <= 1:
    _init_quiet()
    for block, records in tasks:
      yield block, records, featurize_records(records, **featurize_kwargs,
                                              record_timeout_s=record_timeout_s)
    return
  pool = _WorkerPool(workers, featurize_kwargs, record_timeout_s)
  in_flight = collections.deque()

  def head():
    block, records, pending = in_flight[0]
    if not isinstance(pending, list):
      try:
        pending = pool.wait(pending)
      except _WorkerLost as e:
        _recover(pool, in_flight, str(e))
        pending = in_flight[0][2]
    in_flight.popleft()
    return block, records, pending

  try:
    for block, records in tasks:
      in_flight.append((block, records, pool.submit(records)))
      if len(in_flight) >= workers * _TASKS_PER_WORKER:
        yield head()
    while in_flight:
      yield head()
  finally:
    pool.close()


# --xrd_engine=jax: full blocks wait until they hold this many structures to simulate together,
# so each engine call has at least one full device batch (xrd_engine's 256) where blocks allow.
_XRD_BATCH = 256


def _simulate_xrd(buffers: list, max_reflections: float) -> None:
  """Fills the XRD rows the buffers owe with the JAX engine, in one batched call; a structure
  the engine refuses becomes an error row with the engine's reason."""
  pending = [(buffer, i, record, arrays)
             for buffer in buffers for i, record, arrays in buffer.pending_xrd]
  if not pending:
    return
  from xxact_jax import xrd_engine  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  from xxact_jax.xrd_engine import planning  # pylint: disable=g-import-not-at-top
  two_theta_range = (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX)
  wavelength = planning.wavelength_angstrom(constants.XRD_WAVELENGTH)
  planned = xrd_engine.plan_structures(
      [arrays for *_, arrays in pending], wavelength, two_theta_range,
      max_reflections, errors="return",
      indices=[buffer.start + i for buffer, i, _, _ in pending])
  result = xrd_engine.simulate_planned(planned, wavelength,
                                       sigma=constants.XRD_SIGMA, errors="return")
  for k, (buffer, i, record, _) in enumerate(pending):
    if k in result.errors:
      buffer.fail(i, record, f"{record.location}: xrd: {featurize.engine_reason(result.errors[k])}"
                             f" (--xrd_engine=jax)")
    else:
      buffer.data["xrd"][i] = result.patterns[k]
  for buffer in buffers:
    buffer.pending_xrd = []


def _process_blocks(config: PrepareConfig, output: str, kv, num_rows: int, todo: set[int],
                    workers: int, progress: progress_lib.Progress, label: str, row_errors: dict,
                    record_timeout_s: float | None) -> tuple[int, int]:
  """Featurises and writes the blocks in `todo`; returns (valid rows, error rows)."""
  arrays = store.create_arrays(output, num_rows, config.block_rows, config.max_elements,
                               config.structures)
  split = split_assignment(num_rows, config.seed, config.test_fraction)
  fields = schema.fields(config.max_elements, config.structures)
  block_rows = config.block_rows
  buffer = None
  valid = errors = 0
  limits = dict(max_reflections=config.max_reflections, max_xrd_work=config.max_xrd_work,
                xrd_engine=config.xrd_engine, store_structure=config.store_structures)
  full: list = []   # complete blocks not yet written (--xrd_engine=jax: waiting for patterns)
  # --xrd_engine=jax: one thread simulates and writes a batch of blocks while this one keeps the
  # workers busy; one batch at a time (bounded memory). (future, blocks, errors before) or None.
  engine = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xrd-engine")
            if config.xrd_engine == "jax" else None)
  in_engine = None

  def simulate_and_write(blocks: list) -> None:
    _simulate_xrd(blocks, config.max_reflections)
    for b in blocks:
      b.write(arrays, kv)

  def settle() -> None:
    nonlocal valid, errors, in_engine
    if in_engine is None:
      return
    future, blocks, before = in_engine
    in_engine = None
    future.result()
    new = [error for b, n in zip(blocks, before) for error in b.errors[n:]]
    for error in new:
      if errors < _LOG_ERRORS:
        logging.warning("%s error: %s", label, error["reason"])
      errors += 1
    if new:
      progress.advance(0, len(new))
    valid += sum(int(b.data["valid"].sum()) for b in blocks)

  def write_full(force: bool) -> None:
    nonlocal valid, in_engine
    owed = sum(len(b.pending_xrd) for b in full)
    if not full or (not force and 0 < owed < _XRD_BATCH):
      return
    blocks = list(full)
    full.clear()
    if not owed:
      for b in blocks:
        b.write(arrays, kv)
        valid += int(b.data["valid"].sum())
      return
    settle()
    in_engine = (engine.submit(simulate_and_write, blocks), blocks,
                 [len(b.errors) for b in blocks])

  try:
    for block, records, results in _run_tasks(_tasks(config, num_rows, todo, row_errors),
                                              config.max_elements, workers, limits,
                                              record_timeout_s):
      if buffer is None or buffer.block != block:
        b_start = block * block_rows
        buffer = BlockBuffer(block, b_start, min(b_start + block_rows, num_rows), split, fields,
                             config.structures)
      before = len(buffer.errors)
      for record, result in zip(records, results):
        buffer.add(record, result, config.min_formation_energy)
      for error in buffer.errors[before:]:
        if errors < _LOG_ERRORS:
          logging.warning("%s error: %s", label, error["reason"])
        errors += 1
      progress.advance(len(records), len(buffer.errors) - before)
      if buffer.filled == buffer.stop - buffer.start:
        full.append(buffer)
        write_full(force=False)
        buffer = None
    write_full(force=True)
    settle()
  finally:
    if engine is not None:
      engine.shutdown(wait=True)
  if buffer is not None:
    raise RuntimeError(f"Inputs ended early: block {buffer.block} has {buffer.filled} of "
                       f"{buffer.stop - buffer.start} rows; did an input file change?")
  progress.advance(0, 0, force=True)
  return valid, errors


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
  config = PrepareConfig(tuple(os.path.abspath(p) for p in inputs), limit, seed, test_fraction,
                         max_elements, block_rows, min_formation_energy, max_reflections,
                         max_xrd_work, allow_duplicate_ids, xrd_engine, store_structures,
                         structure_sites, structure_reflections)
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
  # No ETA before two tasks per worker finished: spawning workers and importing pymatgen made
  # the first ETA of a 37-minute run read 8 hours.
  progress = progress_lib.Progress(
      todo_rows, label, unit="rows", interval=log_every_s,
      warmup=2 * _TASK_ROWS * max(workers, 1) if workers > 1 else 0,
      emit=lambda line: logging.info("%s", line))
  row_errors = {int(row): reason for row, reason in plan.get("duplicate_rows", {}).items()}
  valid, errors = _process_blocks(config, output, kv, num_rows, todo, workers, progress, label,
                                  row_errors, record_timeout_s or None)

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
  padding = PrepareConfig(**{k: v for k, v in config.items()
                             if k in PrepareConfig.__dataclass_fields__}).structures
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
