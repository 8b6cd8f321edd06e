"""Readers: structure files -> RawRecord stream (payloads are parsed by pymatgen in the workers).

Formats:
  * CSV / .csv.gz / .csv.xz / .csv.bz2 with a `cif` column (the mp_36k format);
  * Alexandria `*.json.bz2` (also .json, .json.gz, .json.xz): {"entries": [ComputedStructureEntry dicts]};
  * a directory of `*.cif` files with an optional `labels.csv` keyed by file stem.
"""

import bz2
import dataclasses
import gzip
import json
import lzma
import math
import os
from typing import Iterator

import pandas as pd

from xxact_jax import constants

# Accepted column / Alexandria data names for each regression label.
LABEL_ALIASES = {
    "formation_energy_per_atom": ("formation_energy_per_atom", "e_form"),
    "band_gap": ("band_gap", "band_gap_ind"),
}
ID_COLUMNS = ("material_id", "mat_id", "id")
CIF_LABELS_FILE = "labels.csv"
_CSV_CHUNK_ROWS = 4096


@dataclasses.dataclass
class RawRecord:
  """One structure before featurisation.

  kind/payload: ("cif", CIF text) or ("entry", ComputedStructureEntry dict).
  location: "file:record" for error messages.
  error: set when the record is already known to be bad (e.g. a non-numeric label).
  """
  material_id: str
  kind: str
  payload: object
  labels: dict
  location: str
  error: str | None = None


def input_format(path: str) -> str:
  """"csv", "alexandria" or "cif_dir"; ValueError/FileNotFoundError naming the path otherwise."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Input {path!r} does not exist.")
  if os.path.isdir(path):
    return "cif_dir"
  name = os.path.basename(path).lower()
  if any(name.endswith(".csv" + s) for s in ("", ".gz", ".xz", ".bz2")):
    return "csv"
  if any(name.endswith(".json" + s) for s in ("", ".gz", ".xz", ".bz2")):
    return "alexandria"
  raise ValueError(f"Input {path!r}: unknown format (expected .csv[.gz|.xz|.bz2], "
                   f"Alexandria .json[.bz2|.gz|.xz], or a directory of .cif files).")


def _parse_label(value, field: str, location: str) -> tuple[float, str | None]:
  if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
    return math.nan, None
  try:
    number = float(value)
  except (TypeError, ValueError):
    return math.nan, f"{location}: label {field!r} is not a number: {value!r}"
  return number, None


def _labels_from(mapping, location: str) -> tuple[dict, str | None]:
  labels, error = {}, None
  for target in constants.REGRESSION_TARGETS:
    name = next((a for a in LABEL_ALIASES[target] if a in mapping), None)
    value = mapping[name] if name is not None else None
    labels[target], problem = _parse_label(value, name or target, location)
    error = error or problem
  return labels, error


def _csv_columns(path: str) -> list[str]:
  try:
    return list(pd.read_csv(path, nrows=0).columns)
  except Exception as e:
    raise ValueError(f"Input {path!r}: cannot read a CSV header: {type(e).__name__}: {e}") from None


def _check_csv(path: str) -> list[str]:
  columns = _csv_columns(path)
  if "cif" not in columns:
    raise ValueError(f"Input {path!r}: no 'cif' column (columns: {columns}).")
  return columns


def _csv_chunks(path: str, usecols=None):
  try:
    yield from pd.read_csv(path, chunksize=_CSV_CHUNK_ROWS, dtype=str, keep_default_na=False,
                           usecols=usecols)
  except pd.errors.ParserError as e:
    raise ValueError(f"Input {path!r}: malformed CSV: {e}") from None


def _read_csv(path: str) -> Iterator[RawRecord]:
  columns = _check_csv(path)
  id_column = next((c for c in ID_COLUMNS if c in columns), None)
  stem = os.path.basename(path)
  row = 0
  for chunk in _csv_chunks(path):
    for record in chunk.to_dict("records"):
      location = f"{path}:row {row}"
      material_id = record[id_column] if id_column else f"{stem}:{row}"
      labels, error = _labels_from(record, location)
      yield RawRecord(material_id, "cif", record["cif"], labels, location, error)
      row += 1


def _open_text(path: str):
  name = path.lower()
  opener = (bz2.open if name.endswith(".bz2") else gzip.open if name.endswith(".gz")
            else lzma.open if name.endswith(".xz") else open)
  return opener(path, "rt", encoding="utf-8")


def _alexandria_entries(path: str) -> list:
  try:
    with _open_text(path) as f:
      document = json.load(f)
  except (OSError, EOFError, ValueError) as e:
    raise ValueError(f"Input {path!r}: not a readable Alexandria JSON file: "
                     f"{type(e).__name__}: {e}") from None
  entries = document.get("entries") if isinstance(document, dict) else None
  if not isinstance(entries, list):
    raise ValueError(f"Input {path!r}: expected a JSON object with an 'entries' list.")
  return entries


def _read_alexandria(path: str) -> Iterator[RawRecord]:
  for i, entry in enumerate(_alexandria_entries(path)):
    location = f"{path}:entry {i}"
    data = (entry.get("data") or {}) if isinstance(entry, dict) else {}
    material_id = str(data.get("mat_id") or (entry.get("entry_id") if isinstance(entry, dict)
                                              else None) or f"{os.path.basename(path)}:{i}")
    labels, error = _labels_from(data, location)
    if not isinstance(entry, dict) or "structure" not in entry:
      error = error or f"{location}: entry has no 'structure'"
    yield RawRecord(material_id, "entry", entry, labels, location, error)


def _cif_files(path: str) -> list[str]:
  return sorted(n for n in os.listdir(path) if n.lower().endswith(".cif"))


def _cif_labels(path: str) -> dict[str, dict]:
  labels_path = os.path.join(path, CIF_LABELS_FILE)
  if not os.path.exists(labels_path):
    return {}
  table = pd.read_csv(labels_path, dtype=str, keep_default_na=False)
  key = next((c for c in ID_COLUMNS if c in table.columns), table.columns[0])
  return {row[key]: row for row in table.to_dict("records")}


def _read_cif_dir(path: str) -> Iterator[RawRecord]:
  labels_by_stem = _cif_labels(path)
  for name in _cif_files(path):
    stem = os.path.splitext(name)[0]
    location = os.path.join(path, name)
    try:
      with open(location, encoding="utf-8", errors="replace") as f:
        text = f.read()
    except OSError as e:
      yield RawRecord(stem, "cif", "", {t: math.nan for t in constants.REGRESSION_TARGETS},
                      location, f"{location}: cannot read: {e}")
      continue
    labels, error = _labels_from(labels_by_stem.get(stem, {}), location)
    yield RawRecord(stem, "cif", text, labels, location, error)


def count_records(path: str) -> int:
  """Number of records in one input (reads the file once)."""
  fmt = input_format(path)
  if fmt == "csv":
    _check_csv(path)
    return sum(len(chunk) for chunk in _csv_chunks(path, usecols=["cif"]))
  if fmt == "alexandria":
    return len(_alexandria_entries(path))
  return len(_cif_files(path))


def iter_records(path: str) -> Iterator[RawRecord]:
  """Yields the records of one input in file order."""
  fmt = input_format(path)
  reader = {"csv": _read_csv, "alexandria": _read_alexandria, "cif_dir": _read_cif_dir}[fmt]
  return reader(path)
