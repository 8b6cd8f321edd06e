"""The plan of a dataset: its arguments, inputs, rows and blocks, checked again on resume.

plan.json records the arguments (PrepareConfig), the row count, a sha256 of every input (a
resume over changed inputs is refused) and the rows whose material_id repeats an earlier one
(refused unless allow_duplicate_ids, then error rows). A block is done once its marker
progress/block_NNNNNN.json exists.
"""

import dataclasses
import hashlib
import itertools
import json
import os
from typing import Sequence

from absl import logging
import numpy as np

from xxact_jax.data import readers
from xxact_jax.data import schema
from xxact_jax.data import store

_HASH_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """Arguments that define a dataset; a resumed run must repeat them exactly."""
  inputs: tuple
  limit: int | None = None
  seed: int = 0
  test_fraction: float = 0.1
  max_elements: int = schema.DEFAULT_MAX_ELEMENTS
  block_rows: int = schema.DEFAULT_BLOCK_ROWS
  min_formation_energy: float | None = None
  # Fields added later: a plan.json without them means the default (see load_or_make_plan).
  max_reflections: float = schema.DEFAULT_MAX_REFLECTIONS
  max_xrd_work: float = schema.DEFAULT_MAX_XRD_WORK
  allow_duplicate_ids: bool = False
  # Where the XRD patterns come from: "pymatgen" (XRDCalculator in the workers; also what a plan
  # without this field means) or "jax" (xxact_jax.xrd_engine, batched in the main process).
  xrd_engine: str = "pymatgen"
  # Crystal structures stored beside the patterns (schema.structure_fields), padded to these sizes.
  store_structures: bool = False
  structure_sites: int = schema.DEFAULT_STRUCTURE_SITES
  structure_reflections: int = schema.DEFAULT_STRUCTURE_REFLECTIONS

  @property
  def structures(self) -> dict | None:
    """The padding of the stored structures, or None when they are not stored."""
    if not self.store_structures:
      return None
    return {"sites": self.structure_sites, "reflections": self.structure_reflections}


def split_assignment(num_rows: int, seed: int, test_fraction: float) -> np.ndarray:
  """Seeded random split (0 = train, 1 = test), identical in every shard."""
  split = np.zeros(num_rows, np.int8)
  num_test = int(round(num_rows * test_fraction))
  split[np.random.default_rng(seed).permutation(num_rows)[:num_test]] = schema.SPLIT_CODES["test"]
  return split


def input_fingerprint(path: str) -> dict:
  """{"path", "bytes", "sha256"} of an input's content (mtime-independent).

  The full file is hashed (streamed; ~1 s per GB, far less than featurising it; the same digest
  as sha256sum); for a CIF directory, the names and bytes of the files the reader uses (*.cif
  and labels.csv).
  """
  digest, size = hashlib.sha256(), 0
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path)
                   if n.lower().endswith(".cif") or n == readers.CIF_LABELS_FILE)
    files = [(n, os.path.join(path, n)) for n in names]
  else:
    files = [(None, path)]
  for name, file_path in files:
    if name is not None:   # a directory: name and length delimit each file
      digest.update(f"{name}\0{os.path.getsize(file_path)}\0".encode("utf-8", "surrogateescape"))
    with open(file_path, "rb") as f:
      while chunk := f.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
  return {"path": path, "bytes": size, "sha256": digest.hexdigest()}   # a file: = sha256sum


def _duplicate_rows(inputs: Sequence[str], ids: list[list[str]], num_rows: int) -> dict:
  """{row: reason} for every row whose material_id already appeared in an earlier row."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  flat = pd.Series(list(itertools.islice(itertools.chain.from_iterable(ids), num_rows)),
                   dtype=object)
  codes, _ = pd.factorize(flat)   # hashing in C: 5M ids in seconds, no Python dict of them
  _, first_index = np.unique(codes, return_index=True)
  first = first_index[codes]
  rows = np.flatnonzero((first != np.arange(len(codes))) & (flat.to_numpy() != ""))
  if not len(rows):
    return {}
  starts = np.cumsum([0] + [len(i) for i in ids])
  locators = {}

  def locate(row: int) -> str:
    index = int(np.searchsorted(starts, row, side="right")) - 1
    if index not in locators:
      locators[index] = readers.record_locator(inputs[index])
    return locators[index](row - int(starts[index]))

  return {int(row): f"{locate(row)}: duplicate material_id {flat[row]!r} of row {first[row]} "
                    f"({locate(int(first[row]))})" for row in rows}


def _unrelated_entry(kv, output: str) -> str | None:
  """An entry of `output` that is not part of a dataset being planned, or None when empty."""
  if "://" not in output:
    if os.path.isfile(output):
      return output
    names = sorted(os.listdir(output)) if os.path.isdir(output) else []
  else:
    names = sorted(k.decode() for k in kv.list().result())
  # plan.json's own temporary/lock files: a run killed while writing it may leave one.
  return next((n for n in names if not n.startswith(schema.PLAN_FILE)), None)


def load_or_make_plan(kv, config: PrepareConfig, output: str) -> dict:
  """The plan of `output`: the one saved (checked against `config` and the inputs) or a new one."""
  existing = store.read_json(kv, schema.PLAN_FILE)
  if existing is None:
    stray = _unrelated_entry(kv, output)
    existing = store.read_json(kv, schema.PLAN_FILE)   # another shard may have planned meanwhile
    if existing is None and stray is not None:
      raise ValueError(f"--output {output!r} is not empty and holds no dataset (no "
                       f"{schema.PLAN_FILE}; found {stray!r}); choose a new or empty directory.")
  wanted = json.loads(json.dumps(dataclasses.asdict(config)))
  if existing is not None:
    defaults = json.loads(json.dumps(dataclasses.asdict(PrepareConfig(inputs=()))))
    saved = {**{k: defaults[k] for k in wanted if k not in existing["config"]},
             **existing["config"]}   # fields added since the plan was written: their defaults
    if saved != wanted:
      changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
      raise ValueError(f"Dataset {output!r} was started with different arguments ({changed}); "
                       f"use the same arguments to resume or a new --output.")
    saved = existing.get("input_fingerprints")
    if saved is None:
      logging.warning("Dataset %r was planned before inputs were fingerprinted: cannot check "
                      "that its inputs are unchanged; resuming anyway.", output)
    for old in saved or ():
      new = input_fingerprint(old["path"])
      if new["sha256"] != old["sha256"]:
        raise ValueError(
            f"Input {old['path']!r} changed since dataset {output!r} was started (then "
            f"{old['bytes']} bytes, sha256 {old['sha256'][:16]}; now {new['bytes']} bytes, "
            f"sha256 {new['sha256'][:16]}); use the same inputs to resume or a new --output.")
    return existing
  # A new plan: the inputs' ids (their duplicates) and fingerprints.
  ids, fingerprints = [], []
  for path in config.inputs:   # inputs past --limit are not read
    if config.limit is not None and sum(map(len, ids)) >= config.limit:
      break
    ids.append(readers.record_ids(path))
    fingerprints.append(input_fingerprint(path))
  counts = [len(i) for i in ids]
  total = sum(counts)
  num_rows = total if config.limit is None else min(total, config.limit)
  if num_rows == 0:
    raise ValueError(f"Inputs {list(config.inputs)} hold no records.")
  duplicates = _duplicate_rows(config.inputs, ids, num_rows)
  if duplicates and not config.allow_duplicate_ids:
    shown = "; ".join(list(duplicates.values())[:5])
    raise ValueError(
        f"The inputs hold {len(duplicates)} duplicate material_id(s) (a material could sit in "
        f"both train and test): {shown}{'; ...' if len(duplicates) > 5 else ''}. Remove them, or "
        f"pass --allow_duplicate_ids to keep the first of each and make the others error rows.")
  plan = {"config": dataclasses.asdict(config), "input_counts": counts, "num_rows": num_rows,
          "input_fingerprints": fingerprints,
          "duplicate_rows": {str(row): reason for row, reason in duplicates.items()},
          "schema_version": schema.SCHEMA_VERSION}
  store.write_json(kv, schema.PLAN_FILE, plan)
  return plan


def marker_key(block: int) -> str:
  """The key of the marker written once `block` is durable."""
  return f"{schema.PROGRESS_DIR}block_{block:06d}.json"


def done_blocks(kv) -> set[int]:
  """The blocks whose marker exists."""
  keys = store.list_keys(kv, schema.PROGRESS_DIR)
  return {int(k.rsplit("_", 1)[1].split(".")[0]) for k in keys}
