"""Helpers shared by the benchmarks: what ran where, and timed loops that report progress."""

import os
import platform
import sys
import time
from importlib import metadata


def cpu_model() -> str:
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  return platform.processor() or "unknown CPU"


def machine() -> str:
  """One line: CPU model, core count and Python version."""
  return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def software_versions(packages=("jax", "jaxlib", "flax", "optax", "grain", "tensorstore")) -> dict:
  versions = {"python": platform.python_version()}
  for name in packages:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def environment() -> dict:
  """The device, host and software a figure was measured with."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {"device_kind": device.device_kind, "platform": device.platform,
          "num_devices": jax.device_count(), "num_processes": jax.process_count(),
          "host_cpu": f"{cpu_model()}, {os.cpu_count()} cores",
          "date": time.strftime("%Y-%m-%d"), **software_versions()}


def progress(message: str):
  """Progress lines go to stderr so stdout stays the result (the last line is JSON)."""
  print(message, file=sys.stderr, flush=True)


def timed_repeats(runs: dict, repeats: int) -> dict:
  """Times each of `runs` (name -> function that blocks until its work is done) `repeats` times.

  The runs take turns within each repeat, so that a shared machine's changing load falls on all
  of them alike. Returns name -> seconds of each repeat.
  """
  seconds = {name: [] for name in runs}
  start = time.perf_counter()
  for r in range(repeats):
    for name, run_once in runs.items():
      t0 = time.perf_counter()
      run_once()
      seconds[name].append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    eta = elapsed / (r + 1) * (repeats - r - 1)
    took = ", ".join(f"{name} {s[-1]:.2f}s" for name, s in seconds.items())
    progress(f"  repeat {r + 1}/{repeats}: {took}; ETA {eta:.0f}s")
  return seconds
