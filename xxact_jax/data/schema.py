"""On-disk schema of a prepared dataset: array names, dtypes, fill values, chunk layout."""

import dataclasses

import numpy as np

from xxact_jax import constants

# 2: optional crystal-structure arrays (prepare --store_structures); version-1 datasets (no
# structures) are still read.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
DEFAULT_MAX_ELEMENTS = 10
DEFAULT_BLOCK_ROWS = 1024
# Per-record XRD size limits (prepare --max_reflections / --max_xrd_work; featurize.check_xrd_size)
# on reflections and reflections × sites. pymatgen enumerates every reciprocal lattice point inside
# the sphere of radius 2 sin(θmax)/λ (θmax = 45° for 2θ ≤ 90°, λ = 1.54184 Å): about
# (4/3)π r³ V ≈ 3.2 V points for a cell of V Å³, each held as a Python tuple (~0.4 kB) and looped
# over in Python (~90 µs on a 2-core Xeon), plus a phase term per point and site (~0.1 µs). A
# 1000 Å cube (3.2e9 points) exhausted 23.5 GB; a 100 Å cube (3.2e6) took 245 s. The largest
# mp_36k cells reach 18,500 points (mp-776610, 5,719 Å³) and 2.1e6 points × sites (mp-707302, 161
# sites); the defaults leave 10× and 100× headroom and bound one record to ~20 s each there.
DEFAULT_MAX_REFLECTIONS = 200_000
DEFAULT_MAX_XRD_WORK = 200_000_000
MATERIAL_ID_BYTES = 64

SPLIT_CODES = {"train": 0, "test": 1}
METADATA_FILE = "metadata.json"
PLAN_FILE = "plan.json"
ERRORS_FILE = "errors.jsonl"
PROGRESS_DIR = "progress/"


@dataclasses.dataclass(frozen=True)
class Field:
  """One array: dtype on disk, per-row shape, fill value (also the value of a failed row)."""
  dtype: str
  row_shape: tuple
  fill_value: object
  row_chunked: bool = False   # True: one inner (sharded) chunk per row, for big rows


# Stored structures (prepare --store_structures), padded per row so the train step can simulate
# a pattern again with per-reflection sample effects (data.xrd_source="simulated"). At 64 sites
# and 2,048 reflections 87 % of mp_36k rows fit (median: 18 sites, 556 reflections); a row that
# does not keeps its stored pattern (has_structure = 0).
DEFAULT_STRUCTURE_SITES = 64
DEFAULT_STRUCTURE_REFLECTIONS = 2048
# Point-group operations of a crystal: at most 48 (m-3m).
MAX_ROTATIONS = 48
# Reflections are listed for |g| up to (1 + margin) beyond the 5-90° sphere on both sides, so a
# strain of up to this size moves no reflection into the grid that the list lacks.
REFLECTION_MARGIN = 0.05


def structure_fields(sites: int, reflections: int) -> dict[str, "Field"]:
  """The structure arrays of a dataset prepared with --store_structures."""
  return {
      "has_structure": Field("uint8", (), 0),
      "lattice": Field("float64", (3, 3), 0.0),
      "frac_coords": Field("float32", (sites, 3), 0.0, row_chunked=True),
      "atomic_numbers": Field("uint8", (sites,), 0),
      "occupancies": Field("float32", (sites,), 0.0),
      "rotations": Field("int8", (MAX_ROTATIONS, 3, 3), 0),
      "hkl": Field("int8", (reflections, 3), 0, row_chunked=True),
      "num_reflections": Field("int16", (), 0),
  }


# Dtypes the train step gets the structure arrays in (data.xrd_source="simulated").
STRUCTURE_BATCH_DTYPES = {
    "has_structure": np.bool_, "lattice": np.float32, "frac_coords": np.float32,
    "atomic_numbers": np.int32, "occupancies": np.float32, "rotations": np.int8,
    "hkl": np.int8, "num_reflections": np.int32,
}


def fields(max_elements: int, structures: dict | None = None) -> dict[str, "Field"]:
  """All arrays of a dataset with K = max_elements; `structures` ({"sites", "reflections"}, or
  None for a dataset without them) adds structure_fields."""
  core = {
      "xrd": Field("float16", (constants.NUM_XRD_POINTS,), 0.0, row_chunked=True),
      "species": Field("uint8", (max_elements,), 0),
      "fractions": Field("float32", (max_elements,), 0.0),
      "formation_energy_per_atom": Field("float32", (), float("nan")),
      "band_gap": Field("float32", (), float("nan")),
      "crystal_system": Field("int8", (), -1),
      "spacegroup_number": Field("int16", (), -1),
      "material_id": Field("uint8", (MATERIAL_ID_BYTES,), 0),
      "split": Field("int8", (), -1),
      "valid": Field("uint8", (), 0),
  }
  if structures is None:
    return core
  return {**core, **structure_fields(structures["sites"], structures["reflections"])}


# Dtypes handed to the loader (ARCHITECTURE.md batch table).
BATCH_DTYPES = {
    "species": np.int32, "fractions": np.float32, "xrd": np.float16,
    "formation_energy_per_atom": np.float32, "band_gap": np.float32,
    "crystal_system": np.int32, "spacegroup_number": np.int32,
}


def encode_material_id(material_id: str) -> np.ndarray:
  raw = str(material_id).encode("utf-8")
  if len(raw) > MATERIAL_ID_BYTES:
    raise ValueError(f"material_id {material_id!r} is longer than {MATERIAL_ID_BYTES} bytes.")
  out = np.zeros(MATERIAL_ID_BYTES, np.uint8)
  out[:len(raw)] = np.frombuffer(raw, np.uint8)
  return out


def decode_material_ids(rows: np.ndarray) -> list[str]:
  rows = np.ascontiguousarray(np.atleast_2d(rows), np.uint8)
  return [bytes(r).rstrip(b"\0").decode("utf-8") for r in rows]


def zarr3_metadata(field: Field, num_rows: int, block_rows: int) -> dict:
  """zarr v3 metadata: one storage chunk (shard) per block of rows. Row-chunked fields use the
  sharding codec with one zstd-compressed inner chunk per row, so a random row read fetches only
  that row's bytes; small fields keep a whole block in one compressed chunk (read in full and
  cached)."""
  shape = [num_rows, *field.row_shape]
  outer = [block_rows, *field.row_shape]
  compressed = [{"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3}}]
  if field.row_chunked:
    codecs = [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, *field.row_shape],
        "codecs": compressed,
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                         {"name": "crc32c"}],
    }}]
  else:
    codecs = compressed
  return {"shape": shape, "data_type": field.dtype,
          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": outer}},
          "codecs": codecs, "fill_value": field.fill_value}
