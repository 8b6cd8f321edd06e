"""One progress line for long loops: count, percentage, rate and ETA, at most every few seconds.

Used by `prepare` (rows, through absl logging), `evaluate` (scans) and `report` (samples), on
stderr. The training loop logs its own line with losses, samples/s and MFU
(training/metric_writers.py).
"""

import math
import sys
import time
from typing import Callable


def format_seconds(seconds: float) -> str:
  """'1h02m03s', '4m05s', or '?' for an unknown duration."""
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
  """Call `update(done=...)` or `advance(n)`; a line every `interval` seconds and at the end.

  The rate counts what finished since the first unit arrived, and no ETA is given until
  `warmup` more units have finished: start-up costs (worker processes, compiles) otherwise
  make the first ETA far too long.
  """

  def __init__(self, total: int, label: str, unit: str = "samples", interval: float = 5.0,
               warmup: int = 0,
               emit: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)):
    self.total, self.label, self.unit = total, label, unit
    self.interval, self.warmup, self.emit = interval, warmup, emit
    self.done = self.errors = 0
    self.start = self.last = time.monotonic()
    self.first = None   # (time, units done) when the first unit finished

  def advance(self, count: int, errors: int = 0, force: bool = False) -> None:
    self.update(self.done + count, self.errors + errors, force)

  def update(self, done: int, errors: int | None = None, force: bool = False) -> None:
    now = time.monotonic()
    if self.first is None and done > self.done:
      self.first = (now, done)
    self.done = done
    if errors is not None:
      self.errors = errors
    finished = self.done >= self.total
    if not (force or finished or now - self.last >= self.interval):
      return
    self.last = now
    since = self.done - self.first[1] if self.first else 0
    if since >= max(self.warmup, 1) and now > self.first[0]:
      rate = since / (now - self.first[0])
      speed = f"{rate:.1f} {self.unit}/s, ETA {format_seconds((self.total - self.done) / rate)}"
    elif finished:
      speed = f"{self.done / max(now - self.start, 1e-9):.1f} {self.unit}/s"
    else:
      speed = "ETA after warm-up"
    error_text = f", errors {self.errors}" if errors is not None or self.errors else ""
    self.emit(f"{self.label} {self.done}/{self.total} {self.unit} "
              f"({100 * self.done / max(self.total, 1):.1f}%), {speed}{error_text}")
