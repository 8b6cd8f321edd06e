"""A small progress line (count, rate, ETA) for long loops, on stderr."""

import sys
import time


class Progress:
  """Call `update(done)`; prints at most every `interval` seconds and at the end."""

  def __init__(self, total: int, label: str, unit: str = "samples", interval: float = 5.0,
               stream=None):
    self.total, self.label, self.unit, self.interval = total, label, unit, interval
    self.stream = stream or sys.stderr
    self.start = time.perf_counter()
    self.last_print = self.start

  def update(self, done: int):
    now = time.perf_counter()
    if now - self.last_print < self.interval and done < self.total:
      return
    self.last_print = now
    elapsed = max(now - self.start, 1e-9)
    rate = done / elapsed
    eta = (self.total - done) / rate if rate > 0 else float("inf")
    print(f"{self.label}: {done}/{self.total} {self.unit} ({rate:.1f}/s, "
          f"elapsed {elapsed:.0f} s, ETA {eta:.0f} s)", file=self.stream, flush=True)
