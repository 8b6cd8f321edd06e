r"""Cost of the measured-pattern augmentation (xxact_jax/data/augment.py) per sample.

  python benchmarks/augment.py [--batch_sizes=64,256] [--repeats=5]

Times the jitted `augment_xrd` with every transform on (the probabilities of configs/measured.py)
on device-resident batches of simulated-like patterns, median of --repeats, after compiling.
Inside the train step the same work runs fused with the step; `benchmarks/sweep.py
--variants=baseline,augment` measures its share there. The last line is a JSON object.
"""

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import _common
from xxact_jax.data import augment


def patterns(key, batch: int) -> jax.Array:
  """Batches of 30 Gaussian peaks (σ = 0.1°) at random angles and heights, max 100."""
  k_pos, k_height = jax.random.split(key)
  centres = jax.random.uniform(k_pos, (batch, 30), minval=5.0, maxval=90.0)
  heights = jax.random.uniform(k_height, (batch, 30), minval=1.0, maxval=100.0)
  return augment.normalise(augment.gaussian_peaks(centres, heights)).astype(jnp.float16)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="64,256")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  config = augment.default_config(enabled=True)
  run = jax.jit(lambda k, x: augment.augment_xrd(k, x, config))
  rows = []
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    x = patterns(jax.random.key(0), batch)
    t0 = time.perf_counter()
    run(jax.random.key(0), x).block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for r in range(args.repeats):
      t0 = time.perf_counter()
      run(jax.random.key(r + 1), x).block_until_ready()
      times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    rows.append({"batch": batch, "compile_s": compile_s, "ms_per_batch": 1e3 * seconds,
                 "us_per_sample": 1e6 * seconds / batch})
    _common.progress(f"batch {batch}: {1e3 * seconds:.1f} ms, {1e6 * seconds / batch:.0f} µs "
                     f"per sample (compile {compile_s:.1f} s)")
  print(json.dumps({"rows": rows, **_common.environment()}))


if __name__ == "__main__":
  sys.exit(main())
