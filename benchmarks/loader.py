r"""Loader throughput from disk: raw read_batch and the Grain pipeline with W worker processes.

  python benchmarks/loader.py --dataset=/tmp/mp36k_full --batch_size=256 --workers=0,1,2
  python benchmarks/loader.py --smoke        # embedded sample, 10 small batches, in-process

Numbers are samples/s over `--num_batches` batches after `--warmup` batches.
"""

import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

import _common
from xxact_jax.data import default_dataset_path
from xxact_jax.data import make_loader
from xxact_jax.data import open_dataset

_DATASET = flags.DEFINE_string("dataset", None, "Prepared dataset (default: embedded sample).")
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Rows per batch.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 40, "Timed batches per setting.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed batches first (worker start-up, caches).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts to time.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Embedded sample, batch 32, 10 batches, 0 workers.")
_COMPARE_LAYOUTS = flags.DEFINE_bool(
    "compare_layouts", False, "Time random-row xrd reads for alternative zarr3 chunk layouts.")


def compare_layouts(path: str, batch_size: int, num: int) -> list[dict]:
  """Rewrites the dataset's xrd rows in other chunk layouts and times random batched reads."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import store  # pylint: disable=g-import-not-at-top
  xrd = store.read_full(store.open_arrays(path, ["xrd"])["xrd"])
  n = xrd.shape[0]
  zstd = [{"name": "bytes", "configuration": {"endian": "little"}},
          {"name": "zstd", "configuration": {"level": 3}}]
  raw = [{"name": "bytes", "configuration": {"endian": "little"}}]

  def sharded(inner_rows, codecs):
    return [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [inner_rows, 4250], "codecs": codecs,
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                         {"name": "crc32c"}]}}]

  layouts = {"shard 1024 rows, inner 1 row, zstd (used)": (1024, sharded(1, zstd)),
             "shard 1024 rows, inner 1 row, raw": (1024, sharded(1, raw)),
             "shard 1024 rows, inner 16 rows, zstd": (1024, sharded(16, zstd)),
             "plain chunks of 64 rows, zstd": (64, zstd),
             "plain chunks of 1024 rows, zstd": (1024, zstd)}
  results = []
  rng = np.random.default_rng(0)
  batches = [np.unique(rng.integers(0, n, batch_size)) for _ in range(num)]
  with tempfile.TemporaryDirectory() as tmp:
    for name, (outer, codecs) in layouts.items():
      spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{tmp}/{len(results)}"},
              "metadata": {"shape": [n, 4250], "data_type": "float16", "codecs": codecs,
                           "chunk_grid": {"name": "regular",
                                          "configuration": {"chunk_shape": [outer, 4250]}}},
              "create": True}
      ts.open(spec).result().write(xrd).result()
      # A fresh handle without cache, as a reader of a dataset far larger than memory.
      array = ts.open({"driver": "zarr3", "kvstore": spec["kvstore"]},
                      context=ts.Context({"cache_pool": {"total_bytes_limit": 0}})).result()
      start = time.perf_counter()
      for rows in batches:
        array.oindex[rows].read().result()
      seconds = time.perf_counter() - start
      size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(spec["kvstore"]["path"])
                 for f in fs)
      results.append({"layout": name, "rows_per_s": round(sum(map(len, batches)) / seconds),
                      "bytes_per_row": round(size / n)})
  return results


def time_batches(batches, batch_size: int, num: int, warmup: int, label: str) -> dict:
  for _ in range(warmup):
    next(batches)
  start = last = time.perf_counter()
  for i in range(num):
    batch = next(batches)
    assert batch["xrd"].shape[0] == batch_size
    if time.perf_counter() - last > 10:
      last = time.perf_counter()
      rate = (i + 1) / (last - start)
      print(f"  {label}: {i + 1}/{num} batches, {rate * batch_size:.0f} samples/s, "
            f"ETA {(num - i - 1) / rate:.0f}s", file=sys.stderr)
  seconds = time.perf_counter() - start
  return {"setting": label, "samples_per_s": round(num * batch_size / seconds, 1),
          "ms_per_batch": round(1000 * seconds / num, 2)}


def random_read_batches(ds, batch_size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  while True:
    yield ds.read_batch(rng.integers(0, len(ds), batch_size))


def main(argv):
  del argv
  if _SMOKE.value:
    path, batch_size, num, workers = default_dataset_path(), 32, 10, [0]
  else:
    path = _DATASET.value or default_dataset_path()
    batch_size, num, workers = _BATCH_SIZE.value, _NUM_BATCHES.value, [int(w) for w in _WORKERS.value]
  ds = open_dataset(path, _SPLIT.value)
  print(f"machine: {_common.machine()}")
  if _COMPARE_LAYOUTS.value:
    print("| xrd layout | random rows/s | bytes/row on disk |\n|---|---|---|")
    for r in compare_layouts(path, batch_size, num):
      print(f"| {r['layout']} | {r['rows_per_s']} | {r['bytes_per_row']} |")
    return
  print(f"dataset: {path} split={_SPLIT.value} rows={len(ds)} batch_size={batch_size}")
  results = [time_batches(random_read_batches(ds, batch_size), batch_size, num, _WARMUP.value,
                          "read_batch (random rows, no Grain)")]
  for w in workers:
    loader = make_loader(ds, batch_size, seed=0, worker_count=w)
    results.append(time_batches(iter(loader), batch_size, num, _WARMUP.value,
                                f"Grain loader, worker_count={w}"))
  print("| setting | samples/s | ms/batch |\n|---|---|---|")
  for r in results:
    print(f"| {r['setting']} | {r['samples_per_s']} | {r['ms_per_batch']} |")


if __name__ == "__main__":
  app.run(main)
