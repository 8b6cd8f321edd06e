"""Worker processes that die with their parent.

A worker orphaned by a SIGKILL of its parent lives on (reparented to PID 1), keeps the parent's
stdout open, so that a `| tee` pipeline never ends, and keeps multiprocessing's resource tracker
alive beside it. `die_with_parent` in a worker's initializer prevents that.
"""

import ctypes
import os
import signal
import sys
import threading
import time


def die_with_parent(parent_pid: int) -> None:
  """Makes this worker exit when `parent_pid` dies, even by SIGKILL (no orphans holding stdout)."""
  if sys.platform.startswith("linux"):
    try:   # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL when the parent exits
      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
      pass
  if os.getppid() != parent_pid:   # the parent died before the death signal was armed
    os._exit(1)

  def watch() -> None:   # portable fallback: reparenting means the parent is gone
    while True:
      time.sleep(1.0)
      if os.getppid() != parent_pid:
        os._exit(1)

  threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def grain_worker_init(parent_pid: int, worker_index: int, worker_count: int) -> None:
  """A Grain `mp_prefetch` worker_init_fn (bind `parent_pid` with functools.partial)."""
  del worker_index, worker_count
  die_with_parent(parent_pid)
