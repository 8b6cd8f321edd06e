"""Readers for measured powder XRD patterns: two-column text and PANalytical .xrdml.

Each reader returns a `MeasuredPattern` with 2θ in degrees (strictly
increasing; a scan recorded from high to low angle is reversed), raw
intensities, and the wavelength stated in the file when the format carries
one. Problems raise `PatternError` naming the file and line.
"""

import bz2
import dataclasses
import gzip
import io
import lzma
import os
import re
import warnings
from typing import Optional
import xml.etree.ElementTree as ElementTree

import numpy as np

from xxact_jax.inference.errors import PatternError
from xxact_jax.inference.wavelengths import MAX_WAVELENGTH
from xxact_jax.inference.wavelengths import MIN_WAVELENGTH

TEXT_SUFFIXES = (".xy", ".xye", ".csv", ".txt", ".dat")
XRDML_SUFFIXES = (".xrdml",)
# A compressed scan (scan.xy.gz, scan.xrdml.bz2, ...) is read through its decompressor.
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open_text(path: str):
  opener = COMPRESSED.get(os.path.splitext(path)[1].lower())
  if opener is not None:
    return opener(path, "rt", encoding="utf-8", errors="replace")
  return open(path, encoding="utf-8", errors="replace")


_COMMENT_PREFIXES = ("#", ";", "!", "//", "%", "'")
_SEPARATORS = re.compile(r"[\s,;]+")


@dataclasses.dataclass(frozen=True)
class MeasuredPattern:
  two_theta: np.ndarray       # float64 [N], degrees, strictly increasing
  intensity: np.ndarray       # float64 [N]
  path: str
  wavelength: Optional[float] = None  # Å, when the file states it
  # Why the wavelength the file states cannot be used (None when it can, or states none): raised
  # when the scan is converted without a wavelength given explicitly.
  wavelength_problem: Optional[str] = None


def read_pattern(path: str) -> MeasuredPattern:
  """Reads a pattern file, choosing the reader from the file suffix."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise PatternError("no such file", path=path)
  stem, suffix = os.path.splitext(path)
  if suffix.lower() in COMPRESSED:   # the format's suffix is the one before
    suffix = os.path.splitext(stem)[1]
  suffix = suffix.lower()
  if suffix in XRDML_SUFFIXES:
    return read_xrdml(path)
  if suffix in TEXT_SUFFIXES:
    return read_two_column(path)
  raise PatternError(
      f"unknown pattern format {suffix!r}; expected one of "
      + ", ".join(TEXT_SUFFIXES + XRDML_SUFFIXES) + " (optionally ."
      + ", .".join(s.lstrip(".") for s in COMPRESSED) + " compressed)", path=path)


def read_two_column(path: str) -> MeasuredPattern:
  """Reads 2θ and intensity from the first two columns of a text file.

  Blank lines and lines starting with a comment mark (#, ;, !, //, %, ') are
  skipped anywhere; non-numeric lines are taken as a header only before the
  first data row. Columns may be separated by spaces, tabs, commas or
  semicolons; extra columns (the esd of .xye) are ignored. Files (or their
  decompressed text) larger than MAX_TEXT_BYTES are refused.
  """
  text = _read_limited_text(path)
  data = text[_header_end(text):]
  if "," in data:
    data = data.replace(",", " ")
  try:
    # numpy's C parser: a million-line scan in a second, where a per-line Python loop took
    # minutes. Anything it does not take as two clean columns of finite numbers in monotonic
    # 2θ falls back to the per-line reader below, which names the offending line.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")   # "input contained no data" for an empty remainder
      table = np.loadtxt(io.StringIO(data), dtype=np.float64, comments=_COMMENT_PREFIXES,
                         usecols=(0, 1), ndmin=2)
  except ValueError:
    table = None
  if table is not None and table.shape[0] and np.all(np.isfinite(table)):
    steps = np.diff(table[:, 0])
    if np.all(steps > 0) or (steps.size and np.all(steps < 0)):
      two_theta, intensity = _ascending(table[:, 0].copy(), table[:, 1].copy(), path)
      return MeasuredPattern(two_theta, intensity, path)
  return _read_two_column_by_line(text, path)


# Largest pattern text read (after decompression). A scan of a million points is about 30 MB;
# a 450 MB file took minutes and gigabytes in the per-line reader.
MAX_TEXT_BYTES = 64 * 1024 * 1024


def _read_limited_text(path: str) -> str:
  too_big = (f"is larger than {MAX_TEXT_BYTES // (1024 * 1024)} MB, the largest pattern file "
             "read (a scan of a million points is about 30 MB); thin the scan or cut its range")
  if os.path.splitext(path)[1].lower() not in COMPRESSED:
    if os.path.getsize(path) > MAX_TEXT_BYTES:
      raise PatternError(f"{os.path.getsize(path) / 1e6:.0f} MB: {too_big}", path=path)
  with _open_text(path) as f:
    text = f.read(MAX_TEXT_BYTES + 1)
  if len(text) > MAX_TEXT_BYTES:
    raise PatternError(f"its text {too_big}", path=path)
  return text.removeprefix("\ufeff")


def _is_data_line(line: str) -> bool:
  line = line.strip()
  if not line or line.startswith(_COMMENT_PREFIXES):
    return False
  fields = [x for x in _SEPARATORS.split(line) if x]
  return len(fields) >= 2 and _parse_floats(fields[:2]) is not None


def _header_end(text: str) -> int:
  """The offset of the first data line (len(text) if none); the text has "\n" line ends."""
  offset = 0
  while offset < len(text):
    end = text.find("\n", offset)
    end = len(text) if end < 0 else end + 1
    if _is_data_line(text[offset:end]):
      return offset
    offset = end
  return len(text)


def _read_two_column_by_line(text: str, path: str) -> MeasuredPattern:
  """read_two_column, line by line: slow, but names the line of any problem."""
  two_theta, intensity, line_numbers = [], [], []
  for line_number, raw in enumerate(text.splitlines(), start=1):
    line = raw.strip().lstrip("\ufeff")
    if not line or line.startswith(_COMMENT_PREFIXES):
      continue
    fields = [x for x in _SEPARATORS.split(line) if x]
    values = _parse_floats(fields[:2])
    if values is None or len(fields) < 2:
      if not two_theta:
        continue  # header line before the data
      raise PatternError(
          f"expected two numbers (2θ, intensity), got {line[:60]!r}",
          path=path, line=line_number)
    for value, name in zip(values, ("2θ", "intensity")):
      if not np.isfinite(value):
        raise PatternError(f"{name} is {value} (not a finite number)",
                           path=path, line=line_number, field=name)
    two_theta.append(values[0])
    intensity.append(values[1])
    line_numbers.append(line_number)
  if not two_theta:
    raise PatternError("no numeric (2θ, intensity) rows found", path=path)
  two_theta, intensity = _ascending(np.asarray(two_theta, dtype=np.float64),
                                    np.asarray(intensity, dtype=np.float64), path, line_numbers)
  return MeasuredPattern(two_theta, intensity, path)


def _parse_floats(fields):
  try:
    return [float(x) for x in fields]
  except ValueError:
    return None


def _ascending(two_theta, intensity, path, line_numbers=None):
  """(2θ, intensity) in increasing 2θ: a scan that strictly decreases throughout is reversed;
  any other step that does not increase is an error naming its line (or point)."""
  if two_theta.size > 1 and np.all(np.diff(two_theta) < 0):
    return two_theta[::-1].copy(), intensity[::-1].copy()
  bad = np.flatnonzero(np.diff(two_theta) <= 0)
  if bad.size:
    i = int(bad[0]) + 1
    line = line_numbers[i] if line_numbers is not None else None
    where = "" if line is not None else f" at point {i + 1}"
    raise PatternError(
        f"2θ must increase{where}: {two_theta[i]:g} follows {two_theta[i - 1]:g}",
        path=path, line=line, field="2θ")
  return two_theta, intensity


def read_xrdml(path: str) -> MeasuredPattern:
  """Reads the first scan of a PANalytical .xrdml file.

  Intensities come from `intensities` (older schema) or `counts` (1.5+);
  2θ from `listPositions` or from `startPosition`/`endPosition`, evenly spaced.
  The wavelength is the Kα1/Kα2 mean weighted by `ratioKAlpha2KAlpha1`.
  """
  text = _read_limited_text(path)
  try:
    root = ElementTree.fromstring(text)
  except ElementTree.ParseError as e:
    raise PatternError(f"not valid XML ({e})", path=path) from None
  scans = _find_all(root, "scan")
  if not scans:
    raise PatternError("no <scan> element", path=path)
  data_points = _find(scans[0], "dataPoints")
  if data_points is None:
    raise PatternError("the first <scan> has no <dataPoints>", path=path)
  values_element = _find(data_points, "counts")
  if values_element is None:
    values_element = _find(data_points, "intensities")
  if values_element is None:
    raise PatternError("<dataPoints> has neither <counts> nor <intensities>", path=path)
  intensity = _floats(values_element.text, path, "intensities")
  two_theta = _xrdml_positions(data_points, len(intensity), path)
  if len(intensity) < 2:
    raise PatternError("fewer than two data points", path=path)
  for values, name in ((two_theta, "2θ"), (intensity, "intensities")):
    if not np.all(np.isfinite(values)):
      point = int(np.flatnonzero(~np.isfinite(values))[0]) + 1
      raise PatternError(f"non-finite value at point {point}", path=path, field=name)
  two_theta, intensity = _ascending(two_theta, intensity, path)
  try:
    return MeasuredPattern(two_theta, intensity, path, _xrdml_wavelength(root, path))
  except PatternError as e:
    return MeasuredPattern(two_theta, intensity, path, None, str(e))


def _xrdml_positions(data_points, count, path):
  for positions in _find_all(data_points, "positions"):
    if positions.get("axis", "").lower() != "2theta":
      continue
    listed = _find(positions, "listPositions")
    if listed is not None:
      two_theta = _floats(listed.text, path, "listPositions")
      if len(two_theta) != count:
        raise PatternError(
            f"{len(two_theta)} listPositions but {count} intensities",
            path=path, field="listPositions")
      return two_theta
    start, end = _find(positions, "startPosition"), _find(positions, "endPosition")
    if start is None or end is None:
      raise PatternError("2Theta <positions> lacks startPosition/endPosition",
                         path=path, field="positions")
    start = _floats(start.text, path, "startPosition")
    end = _floats(end.text, path, "endPosition")
    return np.linspace(start[0], end[0], count)
  raise PatternError('no <positions axis="2Theta">', path=path, field="positions")


def _xrdml_wavelength(root, path):
  used = _find(root, "usedWavelength")
  if used is None:
    return None
  alpha1, alpha2 = _find(used, "kAlpha1"), _find(used, "kAlpha2")
  ratio = _find(used, "ratioKAlpha2KAlpha1")
  if alpha1 is None:
    return None
  wavelength1 = _wavelength_field(alpha1, path, "kAlpha1")
  if alpha2 is None or ratio is None:
    return wavelength1
  wavelength2 = _wavelength_field(alpha2, path, "kAlpha2")
  weight = _floats(ratio.text, path, "ratioKAlpha2KAlpha1")[0]
  # Checked like --wavelength: kAlpha1 = 0 once gave a 0.238 Å mean without a word.
  if not (np.isfinite(weight) and 0.0 <= weight <= 1.0):
    raise PatternError(f"ratioKAlpha2KAlpha1 is {weight:g}; expected a Kα2/Kα1 intensity ratio "
                       "between 0 and 1 (0.5 for an anode's doublet)", path=path,
                       field="ratioKAlpha2KAlpha1")
  return (wavelength1 + weight * wavelength2) / (1.0 + weight)


def _wavelength_field(element, path, field):
  value = _floats(element.text, path, field)[0]
  if not (np.isfinite(value) and MIN_WAVELENGTH <= value <= MAX_WAVELENGTH):
    raise PatternError(f"wavelength {field} is {value:g} Å; expected an X-ray wavelength between "
                       f"{MIN_WAVELENGTH:g} and {MAX_WAVELENGTH:g} Å", path=path, field=field)
  return value


def _floats(text, path, field):
  try:
    values = np.array((text or "").split(), dtype=np.float64)
  except ValueError:
    raise PatternError("contains a value that is not a number", path=path,
                       field=field) from None
  if values.size == 0:
    raise PatternError("is empty", path=path, field=field)
  return values


def _find_all(element, name):
  # .xrdml namespaces change with the schema version (1.0 ... 2.x); match local names.
  return [e for e in element.iter() if e.tag.rsplit("}", 1)[-1] == name]


def _find(element, name):
  return next((e for e in _find_all(element, name) if e is not element), None)
