"""TensorStore access to a dataset directory: a local path or any TensorStore kvstore URL."""

import json
import os

import numpy as np
import tensorstore as ts

from xxact_jax.data import schema

_READ_CACHE_BYTES = 256 << 20


def kvstore_spec(root: str, subpath: str = ""):
  """kvstore spec of root/subpath (root: a local directory or a kvstore URL such as gs://b/dir)."""
  if "://" in root:
    return root.rstrip("/") + "/" + subpath
  return {"driver": "file", "path": os.path.join(os.path.abspath(root), subpath)}


def open_kvstore(root: str) -> ts.KvStore:
  spec = kvstore_spec(root, "")
  if isinstance(spec, str) and not spec.endswith("/"):
    spec += "/"
  try:
    return ts.KvStore.open(spec).result()
  except ValueError as e:
    raise ValueError(f"Cannot open dataset location {root!r}: {e}") from None


def read_bytes(kv: ts.KvStore, key: str) -> bytes | None:
  result = kv.read(key).result()
  return bytes(result.value) if result.state == "value" else None


def read_json(kv: ts.KvStore, key: str):
  raw = read_bytes(kv, key)
  return None if raw is None else json.loads(raw)


def write_json(kv: ts.KvStore, key: str, value) -> None:
  kv.write(key, json.dumps(value, indent=1, sort_keys=True).encode()).result()


def list_keys(kv: ts.KvStore, prefix: str) -> list[str]:
  keys = kv.list(ts.KvStore.KeyRange(prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))).result()
  return sorted(k.decode() for k in keys)


def create_arrays(root: str, num_rows: int, block_rows: int, max_elements: int,
                  structures: dict | None = None) -> dict[str, ts.TensorStore]:
  """Creates (or opens, if present with the same shape) every array at full size; `structures`
  as schema.fields."""
  arrays = {}
  for name, field in schema.fields(max_elements, structures).items():
    spec = {"driver": "zarr3", "kvstore": kvstore_spec(root, name + "/"),
            "metadata": schema.zarr3_metadata(field, num_rows, block_rows)}
    try:
      arrays[name] = ts.open(spec, create=True, open=True).result()
    except ValueError as e:
      raise ValueError(f"Dataset {root!r}: array {name!r} exists with a different layout "
                       f"(was it prepared with other arguments?): {e}") from None
  return arrays


def open_arrays(root: str, names, context: ts.Context | None = None
                ) -> dict[str, ts.TensorStore]:
  """Opens existing arrays read-only; the default context caches small arrays, so that they are
  read once per process."""
  context = context or ts.Context({"cache_pool": {"total_bytes_limit": _READ_CACHE_BYTES}})
  futures = {n: ts.open({"driver": "zarr3", "kvstore": kvstore_spec(root, n + "/")},
                        read=True, open=True, context=context) for n in names}
  arrays = {}
  for name, future in futures.items():
    try:
      arrays[name] = future.result()
    except ValueError as e:
      raise ValueError(f"Dataset {root!r}: cannot open array {name!r}: {e}") from None
  return arrays


def read_full(array: ts.TensorStore) -> np.ndarray:
  return array.read().result()
