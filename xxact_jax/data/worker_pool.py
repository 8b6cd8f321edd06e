"""Featurisation of records on spawned worker processes that may die or hang.

Records go to the workers in tasks of up to TASK_ROWS; results come back in input order. Each
record has a soft time limit inside its worker (SIGALRM); a record whose worker dies (the
out-of-memory killer, a native crash) or hangs where the alarm cannot reach becomes an error row
and the run goes on. Workers die with the parent (processes.die_with_parent).

A library pool (pebble's ProcessPool) was measured against these faults and not used: a worker
that dies while receiving its task breaks that pool for every task ("All workers expired"), and
one that hangs there is never timed out and blocks the other workers' task queue.
"""

import collections
import concurrent.futures
import concurrent.futures.process
import contextlib
import functools
import multiprocessing
import os
import signal
import threading
import time
from typing import Iterable, Iterator, Sequence

from absl import logging

from xxact_jax.data import processes
from xxact_jax.data import readers
from xxact_jax.data import schema

TASK_ROWS = 16           # records per worker task: small, so workers stay balanced
_TASKS_PER_WORKER = 4    # in-flight tasks per worker (bounded memory for 5M-row inputs)
# Beyond TASK_ROWS × record timeout, how long a task may overrun (stuck in native code, where the
# worker's own alarm cannot interrupt it) before the parent kills the workers; and how long a
# restarted pool may take to start (spawn + pymatgen import).
_OVERRUN_S = 60.0
_STARTUP_S = 300.0


def _init_quiet() -> None:
  """Silences the warnings and spglib's C-level noise of featurisation in this process."""
  import warnings  # pylint: disable=g-import-not-at-top
  warnings.simplefilter("ignore")
  # spglib prints "spglib: ... failed." from C to stderr for structures whose symmetry search
  # needs a retry; a failure that matters reaches errors.jsonl through the exception anyway.
  os.environ.setdefault("SPGLIB_WARNING", "OFF")


def _init_worker(parent_pid: int) -> None:
  processes.die_with_parent(parent_pid)
  _init_quiet()
  # pymatgen imported once per worker, before its first record's time limit starts.
  from xxact_jax.data import featurize  # noqa: F401  pylint: disable=g-import-not-at-top


class _RecordTimeout(BaseException):
  """Raised in a worker when a record runs past its time limit (a BaseException, so the
  `except Exception` blocks inside pymatgen and featurize do not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
  """Raises _RecordTimeout in this thread after `seconds` (SIGALRM; Python-level code only);
  active only on the main thread and when no other SIGALRM timer or handler is in use (an
  in-process run must not clobber e.g. pytest-timeout's)."""
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
  """Featurises records (featurize.featurize_structure); each result is a feature dict or an
  error string. With xrd_engine="jax" the caller simulates the patterns (block_writer)."""
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


class _WorkerLost(Exception):
  """The pool lost its unfinished tasks: a worker died, or one hung past the deadline."""


class _WorkerPool:
  """A spawn ProcessPoolExecutor that is restarted when a worker dies or hangs.

  A worker stuck in native code ignores its record's alarm; the parent notices when no task
  finishes for TASK_ROWS × limit + _OVERRUN_S and kills the workers. A dead worker (OOM killer,
  segfault) breaks the executor. Either way the unfinished tasks are redone one record at a time,
  so the record that kills or hangs a worker again becomes an error row and the rest are
  featurised.
  """

  def __init__(self, workers: int, featurize_kwargs: dict, record_timeout_s: float | None):
    self.workers, self.kwargs, self.timeout_s = workers, featurize_kwargs, record_timeout_s
    self.task_deadline_s = (TASK_ROWS * record_timeout_s + _OVERRUN_S
                            if record_timeout_s else None)
    self.executor = None
    self._start()

  def _start(self) -> None:
    context = multiprocessing.get_context("spawn")  # TensorStore threads make fork unsafe
    # Workers are spawned by the thread that submits (PR_SET_PDEATHSIG follows that thread).
    self.executor = concurrent.futures.ProcessPoolExecutor(
        self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    self.last_done = time.monotonic()
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
  for i, (key, records, pending) in enumerate(in_flight):
    results = ([pool.featurize_alone(r) for r in records] if i in lost
               else pending if isinstance(pending, list) else pending.result())
    in_flight[i] = (key, records, results)


def run_tasks(tasks: Iterable[tuple], workers: int, record_timeout_s: float | None = None,
              **featurize_kwargs) -> Iterator[tuple]:
  """Yields (key, records, results) of (key, records) tasks (key: e.g. the records' block) in
  input order, featurised on `workers` processes (<= 1: in this one) with featurize_records's
  `featurize_kwargs`; a result is a feature dict or an error string, and a record taking longer
  than record_timeout_s (None: no limit) is an error."""
  if workers <= 1:
    _init_quiet()
    for key, records in tasks:
      yield key, records, featurize_records(records, **featurize_kwargs,
                                            record_timeout_s=record_timeout_s)
    return
  pool = _WorkerPool(workers, featurize_kwargs, record_timeout_s)
  in_flight = collections.deque()

  def head():
    key, records, pending = in_flight[0]
    if not isinstance(pending, list):
      try:
        pending = pool.wait(pending)
      except _WorkerLost as e:
        _recover(pool, in_flight, str(e))
        pending = in_flight[0][2]
    in_flight.popleft()
    return key, records, pending

  try:
    for key, records in tasks:
      in_flight.append((key, records, pool.submit(records)))
      if len(in_flight) >= workers * _TASKS_PER_WORKER:
        yield head()
    while in_flight:
      yield head()
  finally:
    pool.close()
