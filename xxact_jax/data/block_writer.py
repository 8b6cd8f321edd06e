"""Rows of a block gathered in memory, and their writing: one write per array, then the marker.

--xrd_engine=jax: the workers return structures, not patterns; a BlockWriter simulates the
patterns of complete blocks in batches (xxact_jax.xrd_engine, imported only then) on a background
thread while the caller keeps the workers busy.
"""

import concurrent.futures
import math
from typing import Callable

import numpy as np

from xxact_jax import constants
from xxact_jax.data import block_plan
from xxact_jax.data import readers
from xxact_jax.data import schema
from xxact_jax.data import store
from xxact_jax.data import structures as structures_lib


class BlockBuffer:
  """Rows of one block, filled in order, written with one write per array."""

  def __init__(self, block: int, start: int, stop: int, split: np.ndarray, fields: dict,
               structures: dict | None = None):
    self.block, self.start, self.stop = block, start, stop
    self.structures = structures
    n = stop - start
    self.data = {name: np.full((n, *f.row_shape), f.fill_value, dtype=f.dtype)
                 for name, f in fields.items()}
    self.data["split"][:] = split[start:stop]
    self.fields = fields
    self.errors: list[dict] = []
    self.filled = 0
    # (row in block, record, structure arrays) of rows whose XRD the JAX engine still owes.
    self.pending_xrd: list = []

  def add(self, record: readers.RawRecord, result, min_formation_energy) -> None:
    i = self.filled
    self.filled += 1
    try:
      self.data["material_id"][i] = schema.encode_material_id(record.material_id)
    except ValueError as e:
      result = f"{record.location}: {e}"
    if isinstance(result, str):
      self.errors.append({"row": self.start + i, "material_id": record.material_id,
                          "reason": result})
      return
    self.data["valid"][i] = 1
    self.data["species"][i] = result["species"]
    self.data["fractions"][i] = result["fractions"]
    if "xrd" in result:
      self.data["xrd"][i] = result["xrd"]
    else:   # --xrd_engine=jax: filled in by _simulate_xrd before the block is written
      self.pending_xrd.append((i, record, result["structure"]))
    if self.structures is not None:
      packed = structures_lib.pack(*result["structure"], result["rotations"],
                                   **self.structures)
      # A structure too large for the padding is not stored (has_structure stays 0): training
      # reads its stored pattern instead. metadata.json counts the rows stored.
      if not isinstance(packed, str):
        for name, value in packed.items():
          self.data[name][i] = value
    self.data["crystal_system"][i] = result["crystal_system"]
    self.data["spacegroup_number"][i] = result["spacegroup_number"]
    e_form = record.labels["formation_energy_per_atom"]
    if min_formation_energy is not None and e_form < min_formation_energy:
      e_form = math.nan   # filtered label: stored as missing, the row stays
    self.data["formation_energy_per_atom"][i] = e_form
    self.data["band_gap"][i] = record.labels["band_gap"]

  def fail(self, i: int, record: readers.RawRecord, reason: str) -> None:
    """Turns row i, already added as valid, into an error row (its fields back to the fill)."""
    for name, field in self.fields.items():
      if name not in ("split", "material_id"):
        self.data[name][i] = field.fill_value
    self.errors.append({"row": self.start + i, "material_id": record.material_id,
                        "reason": reason})

  def write(self, arrays: dict, kv) -> None:
    if self.pending_xrd:
      raise RuntimeError(f"block {self.block}: {len(self.pending_xrd)} XRD patterns not simulated")
    futures = [arrays[name][self.start:self.stop].write(value)
               for name, value in self.data.items()]
    for future in futures:
      future.result()
    # The marker follows the committed data: its presence means the block is durable.
    store.write_json(kv, block_plan.marker_key(self.block),
                     {"rows": [self.start, self.stop], "valid": int(self.data["valid"].sum()),
                      "errors": self.errors})


# --xrd_engine=jax: full blocks wait until they hold this many structures to simulate together,
# so each engine call has at least one full device batch (xrd_engine's 256) where blocks allow.
_XRD_BATCH = 256


def _simulate_xrd(buffers: list, max_reflections: float) -> None:
  """Fills the XRD rows the buffers owe with the JAX engine, in one batched call; a structure
  the engine refuses becomes an error row with the engine's reason."""
  pending = [(buffer, i, record, arrays)
             for buffer in buffers for i, record, arrays in buffer.pending_xrd]
  if not pending:
    return
  from xxact_jax import xrd_engine  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  from xxact_jax.xrd_engine import planning  # pylint: disable=g-import-not-at-top
  two_theta_range = (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX)
  wavelength = planning.wavelength_angstrom(constants.XRD_WAVELENGTH)
  planned = xrd_engine.plan_structures(
      [arrays for *_, arrays in pending], wavelength, two_theta_range,
      max_reflections, errors="return",
      indices=[buffer.start + i for buffer, i, _, _ in pending])
  result = xrd_engine.simulate_planned(planned, wavelength,
                                       sigma=constants.XRD_SIGMA, errors="return")
  for k, (buffer, i, record, _) in enumerate(pending):
    if k in result.errors:
      buffer.fail(i, record, f"{record.location}: xrd: {featurize.engine_reason(result.errors[k])}"
                             f" (--xrd_engine=jax)")
    else:
      buffer.data["xrd"][i] = result.patterns[k]
  for buffer in buffers:
    buffer.pending_xrd = []


class BlockWriter:
  """Writes complete blocks, simulating first the XRD patterns they owe (--xrd_engine=jax).

  Blocks that owe patterns wait until they hold _XRD_BATCH structures; then one thread simulates
  and writes them while the caller goes on; one batch at a time (bounded memory). Use as a
  context manager (the thread is joined on exit) and call finish() after the last block.
  """

  def __init__(self, arrays: dict, kv, max_reflections: float,
               on_errors: Callable[[list], None]):
    self.arrays, self.kv, self.max_reflections = arrays, kv, max_reflections
    self.on_errors = on_errors   # the engine's error rows, reported on the caller's thread
    self.valid = 0               # valid rows written
    self._full: list = []        # complete blocks not yet written
    self._engine = None
    self._in_engine = None       # (future, blocks, error counts before) of the batch in the engine

  def __enter__(self) -> "BlockWriter":
    return self

  def __exit__(self, *exc) -> None:
    if self._engine is not None:
      self._engine.shutdown(wait=True)

  def add(self, block: BlockBuffer) -> None:
    """Takes a complete block; writes it now or with its batch."""
    self._full.append(block)
    self._flush(force=False)

  def finish(self) -> None:
    """Writes every block taken and reports the engine's errors."""
    self._flush(force=True)
    self._settle()

  def _flush(self, force: bool) -> None:
    owed = sum(len(b.pending_xrd) for b in self._full)
    if not self._full or (not force and 0 < owed < _XRD_BATCH):
      return
    blocks, self._full = self._full, []
    if not owed:
      for b in blocks:
        b.write(self.arrays, self.kv)
        self.valid += int(b.data["valid"].sum())
      return
    self._settle()
    if self._engine is None:
      self._engine = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xrd-engine")
    self._in_engine = (self._engine.submit(self._simulate_and_write, blocks), blocks,
                       [len(b.errors) for b in blocks])

  def _simulate_and_write(self, blocks: list) -> None:
    _simulate_xrd(blocks, self.max_reflections)
    for b in blocks:
      b.write(self.arrays, self.kv)

  def _settle(self) -> None:
    if self._in_engine is None:
      return
    future, blocks, before = self._in_engine
    self._in_engine = None
    future.result()
    new = [error for b, n in zip(blocks, before) for error in b.errors[n:]]
    if new:
      self.on_errors(new)
    self.valid += sum(int(b.data["valid"].sum()) for b in blocks)
