"""Readers: structure files -> RawRecord stream (payloads are parsed by pymatgen in the workers).

Formats:
  * CSV / .csv.gz / .csv.xz / .csv.bz2 with a `cif` column (the mp_36k format);
  * Alexandria `*.json.bz2` (also .json, .json.gz, .json.xz): {"entries": [ComputedStructureEntry dicts]};
  * a directory of `*.cif` files with an optional `labels.csv` keyed by file stem.

A non-UTF-8 byte does not stop a run: CSV text is decoded with `surrogateescape`, and a row (or
CIF file) holding such a byte becomes a record with `error` set, naming the file, row and line.
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
  """One structure before featurisation."""
  material_id: str
  kind: str   # with payload: ("cif", CIF text) or ("entry", ComputedStructureEntry dict)
  payload: object
  labels: dict
  location: str              # "file:record" for error messages
  error: str | None = None   # set when the record is known to be bad (a non-numeric label, ...)


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


def _labels_from(mapping, location: str) -> tuple[dict, str | None]:
  """(labels, the first label that is not a number); a missing or empty label is NaN."""
  labels, error = {}, None
  for target in constants.REGRESSION_TARGETS:
    name = next((a for a in LABEL_ALIASES[target] if a in mapping), None)
    value = mapping[name] if name is not None else None
    labels[target] = math.nan
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
      continue
    try:
      labels[target] = float(value)
    except (TypeError, ValueError):
      error = error or f"{location}: label {name!r} is not a number: {value!r}"
  return labels, error


def _check_csv(path: str) -> list[str]:
  try:
    columns = list(pd.read_csv(path, nrows=0, encoding_errors="surrogateescape").columns)
  except Exception as e:
    raise ValueError(f"Input {path!r}: cannot read a CSV header: {type(e).__name__}: {e}") from None
  for column in columns:
    # A stray byte in the header would rename its column: a lost material_id column turned
    # every id into FILE:ROW and hid duplicates. The whole file is refused instead.
    where = _undecodable(column) if isinstance(column, str) else None
    if where:
      raise ValueError(f"Input {path!r}: the header (line 1) is not valid UTF-8: "
                       f"{where.replace(' at line 1', '')} in column {readable_id(column)!r}")
  if "cif" not in columns:
    raise ValueError(f"Input {path!r}: no 'cif' column (columns: {columns}).")
  return columns


def _csv_chunks(path: str, usecols=None):
  # surrogateescape: a stray non-UTF-8 byte becomes a lone surrogate that the row check below
  # reports, instead of a UnicodeDecodeError that names neither file nor row.
  try:
    yield from pd.read_csv(path, chunksize=_CSV_CHUNK_ROWS, dtype=str, keep_default_na=False,
                           usecols=usecols, encoding_errors="surrogateescape")
  except pd.errors.ParserError as e:
    raise ValueError(f"Input {path!r}: malformed CSV: {e}") from None
  except UnicodeDecodeError as e:   # not expected with surrogateescape; named all the same
    raise ValueError(f"Input {path!r}: not valid UTF-8 at byte offset {e.start} of the "
                     f"(decompressed) text: {e.reason}") from None
  except (OSError, EOFError, lzma.LZMAError) as e:   # e.g. a truncated .xz or .gz
    raise ValueError(f"Input {path!r}: cannot read: {type(e).__name__}: {e}") from None


def _csv_id_column(columns) -> str | None:
  return next((c for c in ID_COLUMNS if c in columns), None)


def _undecodable(text: str) -> str | None:
  """Where `text` (decoded with surrogateescape) holds a non-UTF-8 byte: "byte 0x.. at line N"."""
  try:
    text.encode("utf-8")   # C speed; only a lone surrogate (an undecodable byte) fails
    return None
  except UnicodeEncodeError as e:
    byte = ord(text[e.start]) - 0xdc00
    return f"byte 0x{byte:02x} at line {text.count(chr(10), 0, e.start) + 1}"


def readable_id(material_id: str) -> str:
  """The id with undecodable bytes shown as U+FFFD, so it can be stored and printed."""
  return material_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _csv_row_error(record: dict, id_column: str | None, location: str) -> str | None:
  """A clear reason for a row the featuriser would reject cryptically, naming the field."""
  for column, value in record.items():
    where = _undecodable(value) if isinstance(value, str) else None
    if where:
      return f"{location}: column {column!r} is not valid UTF-8 ({where} of the field)"
  if id_column and not record[id_column].strip():
    return f"{location}: column {id_column!r} (the material id) is empty"
  if not record["cif"].strip():
    return f"{location}: column 'cif' is empty (a row with missing fields?)"
  return None


def _read_csv(path: str) -> Iterator[RawRecord]:
  columns = _check_csv(path)
  id_column = _csv_id_column(columns)
  stem = os.path.basename(path)
  row = 0
  for chunk in _csv_chunks(path):
    for record in chunk.to_dict("records"):
      location = f"{path}:row {row}"
      material_id = readable_id(record[id_column]) if id_column else f"{stem}:{row}"
      labels, error = _labels_from(record, location)
      error = _csv_row_error(record, id_column, location) or error
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


def _alexandria_id(entry, path: str, i: int) -> str:
  data = (entry.get("data") or {}) if isinstance(entry, dict) else {}
  return str(data.get("mat_id") or (entry.get("entry_id") if isinstance(entry, dict) else None)
             or f"{os.path.basename(path)}:{i}")


def _read_alexandria(path: str) -> Iterator[RawRecord]:
  for i, entry in enumerate(_alexandria_entries(path)):
    location = f"{path}:entry {i}"
    data = (entry.get("data") or {}) if isinstance(entry, dict) else {}
    material_id = _alexandria_id(entry, path, i)
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
  table = pd.read_csv(labels_path, dtype=str, keep_default_na=False,
                      encoding_errors="surrogateescape")
  key = next((c for c in ID_COLUMNS if c in table.columns), table.columns[0])
  return {row[key]: row for row in table.to_dict("records")}


def _read_cif_dir(path: str) -> Iterator[RawRecord]:
  labels_by_stem = _cif_labels(path)
  for name in _cif_files(path):
    stem = os.path.splitext(name)[0]
    location = os.path.join(path, name)
    no_labels = {t: math.nan for t in constants.REGRESSION_TARGETS}
    try:
      with open(location, "rb") as f:
        raw = f.read()
    except OSError as e:
      yield RawRecord(stem, "cif", "", no_labels, location, f"{location}: cannot read: {e}")
      continue
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      line = raw.count(b"\n", 0, e.start) + 1
      yield RawRecord(stem, "cif", "", no_labels, location,
                      f"{location}: not valid UTF-8: byte 0x{raw[e.start]:02x} at line {line} "
                      f"(byte offset {e.start})")
      continue
    labels, error = _labels_from(labels_by_stem.get(stem, {}), location)
    yield RawRecord(stem, "cif", text, labels, location, error)


def record_ids(path: str) -> list[str]:
  """The material ids of one input's records, in file order, as iter_records yields them.

  Cheaper than iter_records: a CSV is parsed for its id column only, CIF files are not opened.
  """
  fmt = input_format(path)
  if fmt == "csv":
    id_column = _csv_id_column(_check_csv(path))
    if id_column is None:
      count = sum(len(chunk) for chunk in _csv_chunks(path, usecols=["cif"]))
      return [f"{os.path.basename(path)}:{row}" for row in range(count)]
    return [readable_id(v) for chunk in _csv_chunks(path, usecols=[id_column])
            for v in chunk[id_column]]
  if fmt == "alexandria":
    return [_alexandria_id(e, path, i) for i, e in enumerate(_alexandria_entries(path))]
  return [os.path.splitext(name)[0] for name in _cif_files(path)]


def record_locator(path: str):
  """A function: record index -> the `location` iter_records gives it (for messages)."""
  fmt = input_format(path)
  if fmt == "csv":
    return lambda index: f"{path}:row {index}"
  if fmt == "alexandria":
    return lambda index: f"{path}:entry {index}"
  names = _cif_files(path)
  return lambda index: os.path.join(path, names[index])


def iter_records(path: str) -> Iterator[RawRecord]:
  """Yields the records of one input in file order."""
  fmt = input_format(path)
  reader = {"csv": _read_csv, "alexandria": _read_alexandria, "cif_dir": _read_cif_dir}[fmt]
  return reader(path)
