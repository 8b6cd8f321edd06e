"""Random access over a prepared dataset (one split or all valid rows)."""

import numpy as np

from xxact_jax.data import schema
from xxact_jax.data import store

_BATCH_FIELDS = tuple(schema.BATCH_DTYPES)
STRUCTURE_FIELDS = tuple(schema.STRUCTURE_BATCH_DTYPES)
_DTYPES = {**schema.BATCH_DTYPES, **schema.STRUCTURE_BATCH_DTYPES}
READABLE_FIELDS = tuple(_DTYPES)


def _checked_indices(indices, n: int) -> np.ndarray:
  """`indices` into n rows as non-negative int64 (negative ones count from the end); errors for
  anything but a 1-D integer array inside [-n, n)."""
  indices = np.asarray(indices)
  if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
    raise ValueError(f"indices must be a 1-D integer array, got shape {indices.shape} "
                     f"dtype {indices.dtype}.")
  if indices.size and (indices.min() < -n or indices.max() >= n):
    raise IndexError(f"Index out of range for a split of {n} rows: "
                     f"[{indices.min()}, {indices.max()}].")
  return np.where(indices < 0, indices + n, indices).astype(np.int64)


class Dataset:
  """Valid rows of one split; `read_batch` does one TensorStore read per array.

  Picklable: worker processes reopen the arrays from the path.
  """

  def __init__(self, path: str, split: str | None, metadata: dict, rows: np.ndarray):
    self.path, self.split = path, split
    self._metadata, self._rows = metadata, rows
    self._arrays = None

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_arrays"] = None
    return state

  @property
  def metadata(self) -> dict:
    return self._metadata

  @property
  def rows(self) -> np.ndarray:
    """Row numbers in the on-disk arrays of this split's records (int64, ascending)."""
    return self._rows

  @property
  def has_structures(self) -> bool:
    """Whether the dataset stores crystal structures (prepare --store_structures)."""
    return bool(self._metadata.get("structures"))

  def _open(self):
    if self._arrays is None:
      names = (*_BATCH_FIELDS, "material_id") + (STRUCTURE_FIELDS if self.has_structures else ())
      self._arrays = store.open_arrays(self.path, names)
    return self._arrays

  def __len__(self) -> int:
    return len(self._rows)

  def _global_rows(self, indices) -> tuple[np.ndarray, np.ndarray]:
    indices = _checked_indices(indices, len(self._rows))
    return indices, self._rows[indices]

  def _read_sorted(self, names, rows: np.ndarray) -> dict[str, np.ndarray]:
    # Sorted unique rows give each array one ordered batched read; `inverse` restores order.
    # Rows already strictly increasing (evaluation and report batches, read in order) skip that
    # reordering copy; the loader's shuffled batches take the general path.
    arrays = self._open()
    if rows.size and np.all(rows[1:] > rows[:-1]):
      futures = {n: arrays[n].oindex[rows].read() for n in names}
      return {n: f.result() for n, f in futures.items()}
    unique, inverse = np.unique(rows, return_inverse=True)
    futures = {n: arrays[n].oindex[unique].read() for n in names}
    return {n: f.result()[inverse] for n, f in futures.items()}

  def read_batch(self, indices, fields=_BATCH_FIELDS) -> dict[str, np.ndarray]:
    """Batch dict (ARCHITECTURE.md) for split-relative `indices`, in their order; `fields`
    (default: the model's inputs and labels) picks the arrays read, e.g. without the patterns,
    or with the stored structures (STRUCTURE_FIELDS) of a dataset that has them."""
    known = _BATCH_FIELDS + (STRUCTURE_FIELDS if self.has_structures else ())
    unknown = sorted(set(fields) - set(known))
    if unknown:
      hint = (f"; {self.path!r} stores no structures (prepare --store_structures)"
              if set(unknown) & set(STRUCTURE_FIELDS) else "")
      raise ValueError(f"Unknown batch fields {unknown}; known: {list(known)}{hint}")
    indices, rows = self._global_rows(indices)
    raw = self._read_sorted(fields, rows)
    batch = {n: raw[n].astype(_DTYPES[n], copy=False) for n in fields}
    batch["index"] = indices
    return batch

  def material_ids(self, indices) -> list[str]:
    _, rows = self._global_rows(indices)
    return schema.decode_material_ids(self._read_sorted(("material_id",), rows)["material_id"])

  def __getitem__(self, i: int) -> dict:
    indices, rows = self._global_rows(np.asarray([i]))
    raw = self._read_sorted((*_BATCH_FIELDS, "material_id"), rows)
    record = {n: raw[n][0].astype(schema.BATCH_DTYPES[n], copy=False) for n in _BATCH_FIELDS}
    record["index"] = int(indices[0])
    record["material_id"] = schema.decode_material_ids(raw["material_id"])[0]
    return record

  def fraction(self, fraction: float, seed: int = 0) -> "Dataset":
    """A random `fraction` of this split's rows (at least one), the same for the same seed."""
    if not 0 < fraction <= 1:
      raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    count = max(1, int(round(fraction * len(self._rows))))
    chosen = np.random.default_rng(seed).choice(len(self._rows), size=count, replace=False)
    return Dataset(self.path, self.split, self._metadata, np.sort(self._rows[chosen]))

  def __repr__(self) -> str:
    return f"Dataset({self.path!r}, split={self.split!r}, rows={len(self)})"


class ConcatDataset:
  """Several Datasets read as one: indices [0, len(a)) read `a`, the next len(b) read `b`, ...

  For training on a prepared dataset together with others (e.g. synthetic crystals): the first
  part gives the metadata (label statistics, max_elements), every part must have the same
  max_elements, and a batch that spans parts is one read per part.
  """

  def __init__(self, parts: list):
    if not parts:
      raise ValueError("ConcatDataset needs at least one dataset.")
    sizes = {p.path: int(p.metadata["max_elements"]) for p in parts}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"Datasets with different max_elements cannot be read as one: {sizes}")
    self.parts = list(parts)
    self.path, self.split = parts[0].path, parts[0].split
    self._offsets = np.cumsum([0] + [len(p) for p in parts])

  @property
  def metadata(self) -> dict:
    return self.parts[0].metadata

  @property
  def has_structures(self) -> bool:
    return all(p.has_structures for p in self.parts)

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def _by_part(self, indices):
    """The checked indices, and (part number, positions in `indices`, the part's own indices)
    for each part they reach."""
    indices = _checked_indices(indices, len(self))
    part = np.searchsorted(self._offsets, indices, side="right") - 1
    groups = []
    for p in np.unique(part):
      where = np.flatnonzero(part == p)
      groups.append((p, where, indices[where] - self._offsets[p]))
    return indices, groups

  def read_batch(self, indices, fields=_BATCH_FIELDS) -> dict[str, np.ndarray]:
    indices, groups = self._by_part(indices)
    if not groups:   # no indices: the first part's empty batch
      return self.parts[0].read_batch(indices, fields)
    batch = {}
    for p, where, own in groups:
      got = self.parts[p].read_batch(own, fields)
      for n in fields:
        if n not in batch:
          batch[n] = np.empty((len(indices), *got[n].shape[1:]), got[n].dtype)
        batch[n][where] = got[n]
    batch["index"] = indices
    return batch

  def material_ids(self, indices) -> list[str]:
    indices, groups = self._by_part(indices)
    ids = [""] * len(indices)
    for p, where, own in groups:
      for i, material_id in zip(where, self.parts[p].material_ids(own)):
        ids[i] = material_id
    return ids

  def __repr__(self) -> str:
    return f"ConcatDataset({self.parts!r})"


def open_dataset(path: str, split: str | None = None) -> Dataset:
  """The valid rows of `split` (None: all, "train" or "test") of the prepared dataset at `path`
  (prepare's --output: a local directory or kvstore URL); ValueError / FileNotFoundError naming
  the path when it is not a complete dataset."""
  if split is not None and split not in schema.SPLIT_CODES:
    raise ValueError(f"split must be None or one of {sorted(schema.SPLIT_CODES)}, got {split!r}.")
  kv = store.open_kvstore(path)
  metadata = store.read_json(kv, schema.METADATA_FILE)
  if metadata is None:
    plan = store.read_json(kv, schema.PLAN_FILE)
    if plan is None:
      raise FileNotFoundError(f"{path!r} is not a prepared dataset (no {schema.METADATA_FILE}).")
    raise ValueError(f"Dataset {path!r} is incomplete: prepare has not finished every block; "
                     f"re-run it with the same arguments to resume.")
  if metadata.get("schema_version") not in schema.READABLE_SCHEMA_VERSIONS:
    raise ValueError(f"Dataset {path!r} has schema_version {metadata.get('schema_version')}, "
                     f"this package reads {list(schema.READABLE_SCHEMA_VERSIONS)}; re-run "
                     f"prepare.")
  columns = {n: store.read_full(a) for n, a in store.open_arrays(path, ("valid", "split")).items()}
  keep = columns["valid"].astype(bool)
  if split is not None:
    keep &= columns["split"] == schema.SPLIT_CODES[split]
  return Dataset(path, split, metadata, np.flatnonzero(keep).astype(np.int64))
