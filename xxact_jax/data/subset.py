"""A random subset of a prepared dataset, copied array by array (no featurisation, no pymatgen).

For a dataset small enough to move to another machine, a quick experiment, or a fixture:

  python -m xxact_jax.prepare --subset_of=/data/mp36k --limit=10000 --output=/tmp/mp10k

Rows keep their split; label statistics are recomputed over the subset's train rows.
"""

import dataclasses
import time

from absl import logging
import numpy as np

from xxact_jax.data import block_plan
from xxact_jax.data import build_dataset
from xxact_jax.data import dataset as dataset_lib
from xxact_jax.data import schema
from xxact_jax.data import store


def subset_dataset(source: str, output: str, num_rows: int, seed: int = 0,
                   log_every_s: float = 10.0) -> dict:
  """Copies `num_rows` valid rows of `source`, drawn at random from `seed`, into `output`;
  returns the new dataset's metadata. ValueError when `output` already holds a dataset, or
  `source` has fewer valid rows."""
  ds = dataset_lib.open_dataset(source)
  if num_rows < 1 or num_rows > len(ds):
    raise ValueError(f"Cannot take {num_rows} rows from {source!r}: it has {len(ds)} valid rows.")
  kv = store.open_kvstore(output)
  if store.read_json(kv, schema.PLAN_FILE) or store.read_json(kv, schema.METADATA_FILE):
    raise ValueError(f"{output!r} already holds a dataset; choose a new --output.")
  source_meta = ds.metadata
  max_elements, block_rows = int(source_meta["max_elements"]), int(source_meta["block_rows"])
  rows = np.sort(np.random.default_rng(seed).choice(ds.rows, num_rows, replace=False))
  padding = source_meta.get("structures")
  padding = padding and {"sites": padding["sites"], "reflections": padding["reflections"]}
  names = list(schema.fields(max_elements, padding))
  src = store.open_arrays(source, names)
  dst = store.create_arrays(output, num_rows, block_rows, max_elements, padding)
  start_time, last_log = time.monotonic(), 0.0
  for start in range(0, num_rows, block_rows):
    chosen = rows[start:start + block_rows]
    reads = {n: src[n].oindex[chosen].read() for n in names}
    writes = [dst[n][start:start + len(chosen)].write(r.result()) for n, r in reads.items()]
    for w in writes:
      w.result()
    done = start + len(chosen)
    elapsed = time.monotonic() - start_time
    if elapsed - last_log >= log_every_s or done == num_rows:
      last_log = elapsed
      logging.info("subset: %d/%d rows, %.0f rows/s, ETA %.0f s", done, num_rows,
                   done / max(elapsed, 1e-9), elapsed / done * (num_rows - done))
  config = block_plan.PrepareConfig(
      inputs=(source,), limit=num_rows, seed=source_meta["splits"]["seed"],
      test_fraction=source_meta["splits"]["test_fraction"], max_elements=max_elements,
      block_rows=block_rows, min_formation_energy=source_meta.get("min_formation_energy"),
      xrd_engine=source_meta.get("xrd_engine", "pymatgen"), store_structures=bool(padding),
      **({"structure_sites": padding["sites"], "structure_reflections": padding["reflections"]}
         if padding else {}))
  plan = {"config": dataclasses.asdict(config), "num_rows": num_rows,
          "schema_version": schema.SCHEMA_VERSION, "subset_of": source}
  store.write_json(kv, schema.PLAN_FILE, plan)
  return build_dataset.finalize(
      output, plan, {"subset_of": {"source": source, "rows": num_rows, "seed": seed}})
