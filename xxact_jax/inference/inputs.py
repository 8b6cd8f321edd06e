"""Turns user inputs (formula, composition, pattern, CIF) into model arrays.

No JAX here; pymatgen only inside `featurize_cif`.
"""

import csv
import io
import os
from typing import Any, Union

import numpy as np

from xxact_jax import constants
from xxact_jax.data import composition as composition_lib
from xxact_jax.inference import patterns
from xxact_jax.inference import resample
from xxact_jax.inference import wavelengths
from xxact_jax.inference.errors import InputError

CompositionLike = Union[str, dict, Any]   # formula, {symbol: amount}, pymatgen Composition
XrdLike = Union[str, os.PathLike, np.ndarray, patterns.MeasuredPattern, tuple, None]


# Elements the model can be asked about: the Materials Project and Alexandria data it is trained
# on hold compounds of H–Pu only (mp_36k's heaviest element is Pu). mat2vec has a vector for every
# element up to Og, but past Pu no training compound contained one, so a prediction would rest on
# inputs the model never learnt to read.
MAX_SUPPORTED_Z = 94
SUPPORTED_ELEMENTS = f"H–{constants.ELEMENTS[MAX_SUPPORTED_Z - 1]} (Z 1–{MAX_SUPPORTED_Z})"


# One CSV schema for `predict --input` and `evaluate --measured`: formula, xrd_file, wavelength
# (and the labels, for evaluate); each also reads the other's names for the same columns.
SCAN_COLUMN_ALIASES = {"file": "xrd_file", "wavelength_angstrom": "wavelength"}


def read_csv_table(path: str, aliases: dict[str, str] | None = None
                   ) -> tuple[list[str], list[tuple[int, dict]]]:
  """The header and the (line, row) pairs of a UTF-8 CSV (a BOM allowed); line 1 is the header.

  `aliases` ({other name: name}) renames columns; a CSV with both names is refused.

  A byte that is not UTF-8 in the header raises InputError naming line 1. In a data row it is
  kept as a lone surrogate (surrogateescape), which `decode_row` finds, so that the row
  alone fails with its own line number (the decoder used to stop the whole file at "line 0").
  """
  if not os.path.isfile(path):
    raise InputError("no such file", path=path)
  with open(path, "rb") as f:
    text = f.read().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
  reader = csv.DictReader(io.StringIO(text, newline=""))
  try:
    header = list(reader.fieldnames or ())
    for name in header:
      problem = _undecodable(name)
      if problem:
        raise InputError(f"header is not valid UTF-8 ({problem} in column "
                         f"{readable(name)!r})", path=path, line=1)
    renames = {a: c for a, c in (aliases or {}).items() if a in header}
    for alias, name in renames.items():
      if name in header:
        raise InputError(f"has both columns {name!r} and {alias!r} (the same column under "
                         "two names)", path=path, line=1)
    table = [(reader.line_num, {renames.get(k, k): v for k, v in row.items()})
             for row in reader]
    return [renames.get(c, c) for c in header], table
  except csv.Error as e:
    # The reader cannot go on past malformed CSV, so this stops the whole file.
    raise InputError(f"not readable as CSV ({e})", path=path, line=reader.line_num) from None


def decode_row(row: dict) -> tuple[dict, tuple[str, str] | None]:
  """A read_csv_table row with undecodable bytes shown as U+FFFD (`readable`), and (column,
  "byte 0x..") of its first field that is not UTF-8, or None."""
  for column, value in row.items():
    problem = _undecodable(value) if isinstance(value, str) else None
    if problem:
      shown = {k: readable(v) if isinstance(v, str) else v for k, v in row.items()}
      return shown, (column, problem)
  return row, None


def readable(text: str) -> str:
  """`text` with undecodable bytes (read_csv_table's lone surrogates) shown as U+FFFD."""
  return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _undecodable(text: str) -> str | None:
  try:
    text.encode("utf-8")   # only a lone surrogate (an undecodable byte) fails
    return None
  except UnicodeEncodeError as e:
    return f"byte 0x{ord(text[e.start]) - 0xdc00:02x}"


def check_supported(symbols, what: str) -> None:
  """ValueError `what: ...` when an element lies outside `SUPPORTED_ELEMENTS`."""
  beyond = [s for s in symbols if constants.ATOMIC_NUMBER.get(s, 0) > MAX_SUPPORTED_Z]
  if beyond:
    listed = ", ".join(f"{s} (Z={constants.ATOMIC_NUMBER[s]})" for s in beyond)
    verb = "element {} is" if len(beyond) == 1 else "elements {} are"
    raise ValueError(f"{what}: {verb.format(listed)} not supported by the model, which knows "
                     f"{SUPPORTED_ELEMENTS}")


def encode(value: CompositionLike, max_elements: int) -> tuple[np.ndarray, np.ndarray]:
  """(species int32[K], fractions float32[K]) of a formula string, a {symbol: amount} dict or a
  pymatgen Composition. A ValueError names the formula for bad syntax, an unknown element, an
  element outside SUPPORTED_ELEMENTS, or a zero or negative amount (parse_formula alone would
  drop "Fe0" silently)."""
  if isinstance(value, str):
    amounts = composition_lib.parse_formula(value)
    zeros = composition_lib.zero_amount_symbols(value)
    if zeros:
      raise ValueError(f"Bad formula {value!r}: zero amount of {', '.join(zeros)}; every "
                       "element needs a positive amount")
  else:
    if hasattr(value, "get_el_amt_dict"):   # pymatgen Composition, duck-typed
      amounts = {str(k): float(v) for k, v in value.get_el_amt_dict().items()}
    elif isinstance(value, dict):
      amounts = {str(k): float(v) for k, v in value.items()}
    else:
      raise ValueError(f"composition {value!r}: expected a formula string, a {{symbol: amount}} "
                       "dict or a pymatgen Composition")
    bad = [s for s, a in amounts.items() if not (a > 0 and np.isfinite(a))]
    if bad:
      raise ValueError(f"Bad composition {amounts!r}: zero, negative or non-finite amount of "
                       f"{', '.join(bad)}; every element needs a positive amount")
  check_supported(amounts, f"Bad formula {value!r}" if isinstance(value, str)
                  else f"Bad composition {amounts!r}")
  return composition_lib.encode_composition(amounts, max_elements)


def pattern_on_grid(value: XrdLike, wavelength=None,
                    preprocessing: resample.Preprocessing | None = None) -> np.ndarray:
  """float32[4250] model input (max 100) from a file path, a (2θ, I) pair or a grid array.

  Files and (2θ, I) pairs go through `resample.to_model_grid` with `preprocessing`. An array of
  length 4250 is taken as already on the 5–90° Cu Kα grid and prepared: it is only scaled to
  max 100, and its NaN points (or points equal to `constants.UNMEASURED_INTENSITY`) mark a range
  the scan did not cover.
  """
  if isinstance(value, (str, os.PathLike)):
    return resample.load_measured_pattern(os.fspath(value), wavelength, preprocessing)
  if isinstance(value, patterns.MeasuredPattern):
    return resample.to_model_grid(value, wavelength, preprocessing)
  if isinstance(value, tuple) and len(value) == 2:
    two_theta = np.asarray(value[0], np.float64)
    intensity = np.asarray(value[1], np.float64)
    if two_theta.shape != intensity.shape or two_theta.ndim != 1:
      raise InputError(f"2θ and intensity arrays must be 1-D and equal in length, got "
                       f"{two_theta.shape} and {intensity.shape}", path="<arrays>")
    if not (np.all(np.isfinite(two_theta)) and np.all(np.isfinite(intensity))):
      raise InputError("2θ or intensity holds NaN or Inf", path="<arrays>")
    if np.any(np.diff(two_theta) <= 0):
      raise InputError("2θ must increase", path="<arrays>", field="2θ")
    return resample.to_model_grid(patterns.MeasuredPattern(two_theta, intensity, "<arrays>"),
                                  wavelength, preprocessing)
  array = np.asarray(value, dtype=np.float64)
  if array.shape != (constants.NUM_XRD_POINTS,):
    raise InputError(f"an XRD array must have {constants.NUM_XRD_POINTS} points on the "
                     f"5–90° grid, got shape {array.shape}; pass (two_theta, intensity) "
                     "to resample", path="<array>")
  unmeasured = np.isnan(array) | (array == constants.UNMEASURED_INTENSITY)
  measured = array[~unmeasured]
  if not np.all(np.isfinite(measured)) or measured.size == 0 or measured.max() <= 0:
    raise InputError("XRD array holds Inf, or no positive intensity where it is measured",
                     path="<array>")
  resample.check_intensity_scale(measured, "<array>")
  out = np.maximum(np.where(unmeasured, 0.0, array), 0.0) * (
      constants.XRD_MAX_INTENSITY / measured.max())
  out[unmeasured] = constants.UNMEASURED_INTENSITY
  return out.astype(np.float32)


def as_stored(xrd: np.ndarray) -> np.ndarray:
  """Rounds a pattern through float16, the precision the dataset stores and training saw."""
  return np.asarray(xrd, np.float32).astype(np.float16).astype(np.float32)


def read_cif(cif: str, max_elements: int, source: str | None = None) -> dict:
  """A CIF (a path, or the text itself) as the dataset featurises it: "formula" and "arrays"
  (species, fractions, xrd). pymatgen is imported only here."""
  if "data_" in cif and "\n" in cif:       # CIF text, not a path
    features = featurize_cif_text(cif, max_elements, source=source or "<CIF text>")
  else:
    features = featurize_cif(cif, max_elements)
  return {"formula": features["formula"],
          "arrays": (features["species"], features["fractions"], as_stored(features["xrd"]))}


def prepare_sample(model, composition=None, xrd=None, wavelength=None, *, cif=None,
                   preprocessing: resample.Preprocessing | None = None):
  """(species, fractions, xrd) arrays of one sample for `model` (inference/model.py: its
  max_elements and which inputs it reads; zeros for an unused one), and the scan.

  `cif` (a path or CIF text) takes the place of the composition and the pattern. The wavelength
  (Å or an anode name) is checked here, with the InputError's field "wavelength", and the
  composition before the pattern is read. A pattern file is parsed once, here, and comes back
  parsed (patterns.MeasuredPattern, which keeps its path) for the identification; any other
  `xrd` comes back as given (None for a CIF).
  """
  if cif is not None:
    if composition is not None or xrd is not None:
      raise ValueError("give a CIF, or a composition and a pattern, not both")
    return read_cif(cif, model.max_elements)["arrays"], None
  if wavelength is not None:
    try:
      wavelengths.parse_wavelength(wavelength)
    except ValueError as e:
      raise InputError(str(e), field="wavelength") from None
  if model.uses_composition:
    if composition is None:
      raise InputError(f"the {model.model_name} model needs a composition")
    species, fractions = encode(composition, model.max_elements)
  else:
    species = np.zeros(model.max_elements, np.int32)
    fractions = np.zeros(model.max_elements, np.float32)
    if composition is not None:   # still validated, so a typo is not silently ignored
      encode(composition, model.max_elements)
  if model.uses_xrd:
    if xrd is None:
      raise InputError(f"the {model.model_name} model needs an XRD pattern")
    if isinstance(xrd, (str, os.PathLike)):
      xrd = patterns.read_pattern(os.fspath(xrd))
    pattern = as_stored(pattern_on_grid(xrd, wavelength, preprocessing))
  else:
    pattern = np.zeros(constants.NUM_XRD_POINTS, np.float32)
  return (species, fractions, pattern), xrd


def featurize_cif(path: str, max_elements: int) -> dict:
  """Composition and simulated Cu Kα pattern of a CIF file, as the dataset featurises it."""
  if not os.path.isfile(path):
    raise InputError("no such file", path=path)
  with open(path, encoding="utf-8", errors="replace") as f:
    return featurize_cif_text(f.read(), max_elements, source=path)


def featurize_cif_text(text: str, max_elements: int, source: str = "<cif>") -> dict:
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top  (pymatgen)
  try:
    structure = featurize.structure_from_payload("cif", text)
    features = featurize.featurize_structure(structure, max_elements)
    features["formula"] = structure.composition.reduced_formula
    check_supported([constants.ELEMENTS[z - 1] for z in features["species"] if z],
                    features["formula"])
  except ValueError as e:
    raise InputError(f"cannot use this CIF ({e})", path=source) from None
  return features
