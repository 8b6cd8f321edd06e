"""Structure -> composition + smeared XRD + symmetry labels (the only pymatgen user with readers.py)."""

import math
import re
import warnings

import numpy as np
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.io.cif import CifFile
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.data import composition as composition_lib
from xxact_jax.data import schema
from xxact_jax.data import structures as structures_lib
from xxact_jax.data import xrd as xrd_lib

SYMPREC = 0.1
_CALCULATOR = XRDCalculator(wavelength=constants.XRD_WAVELENGTH)
_CRYSTAL_SYSTEM_INDEX = {name: i for i, name in enumerate(constants.CRYSTAL_SYSTEMS)}

_RECIPROCAL_RADIUS = physics.inverse_d(constants.TWO_THETA_MAX, _CALCULATOR.wavelength)
_CELL_FIELDS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
                "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
_CIF_CELL_LINE = re.compile(
    r"^[ \t]*(_cell_(?:length_[abc]|angle_(?:alpha|beta|gamma)))[ \t]+(\S+)", re.M | re.I)
_CIF_BLOCK = re.compile(r"^[ \t]*data_", re.M | re.I)


class FeaturizationError(ValueError):
  """A record that cannot be featurised; the message says which step failed and why."""


def _element_amounts(structure: Structure) -> dict[str, float]:
  amounts: dict[str, float] = {}
  for species, amount in structure.composition.items():
    # Species/DummySpecies carry the symbol on .element or .symbol; an unknown
    # CIF symbol becomes a DummySpecies (e.g. "Qq0+") that has no element.
    element = getattr(species, "element", species)
    symbol = getattr(element, "symbol", str(element))
    if symbol not in constants.ATOMIC_NUMBER:
      raise FeaturizationError(f"unknown element symbol {symbol!r} in the structure")
    amounts[symbol] = amounts.get(symbol, 0.0) + float(amount)
  return amounts


def stick_pattern(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
  """Cu Kα stick pattern between 5° and 90° 2θ, as pymatgen computes it."""
  pattern = _CALCULATOR.get_pattern(
      structure, two_theta_range=(constants.TWO_THETA_MIN, constants.TWO_THETA_MAX))
  return np.asarray(pattern.x, np.float64), np.asarray(pattern.y, np.float64)


def symmetry_labels(structure: Structure, rotations: bool = False) -> tuple:
  """(crystal system index 0..6, space group number 1..230) at symprec 0.1, and with
  `rotations` the point-group rotations in the structure's lattice basis, int8[n, 3, 3]."""
  analyzer = SpacegroupAnalyzer(structure, symprec=SYMPREC)
  labels = (_CRYSTAL_SYSTEM_INDEX[analyzer.get_crystal_system()],
            int(analyzer.get_space_group_number()))
  if not rotations:
    return labels
  return labels + (structures_lib.point_group_rotations(
      analyzer.get_symmetry_operations(cartesian=False)),)


def check_xrd_size(structure: Structure,
                   max_reflections: float = schema.DEFAULT_MAX_REFLECTIONS,
                   max_xrd_work: float = schema.DEFAULT_MAX_XRD_WORK) -> None:
  """Raises FeaturizationError when the pattern would take too much memory or time: estimated
  reflections up to 2θ = TWO_THETA_MAX, (4/3)π r³ V, or reflections × sites above the limits."""
  reflections = 4 / 3 * math.pi * _RECIPROCAL_RADIUS ** 3 * structure.lattice.volume
  work = reflections * len(structure)
  if reflections > max_reflections:
    raise FeaturizationError(
        f"xrd: cell too large: about {reflections:.3g} reflections up to "
        f"2θ = {constants.TWO_THETA_MAX:g}° (cell volume {structure.lattice.volume:.4g} Å³), "
        f"above the limit of {max_reflections:.3g} (--max_reflections)")
  if work > max_xrd_work:
    raise FeaturizationError(
        f"xrd: too much work: about {reflections:.3g} reflections × {len(structure)} sites = "
        f"{work:.3g}, above the limit of {max_xrd_work:.3g} (--max_xrd_work)")


XRD_ENGINES = ("pymatgen", "jax")


def engine_reason(message: str) -> str:
  """An xrd_engine error message without its leading 'structure <index>: '."""
  return re.sub(r"^structure -?\d+: ", "", str(message))


def featurize_structure(structure: Structure, max_elements: int, *,
                        max_reflections: float = schema.DEFAULT_MAX_REFLECTIONS,
                        max_xrd_work: float = schema.DEFAULT_MAX_XRD_WORK,
                        xrd_engine: str = "pymatgen", store_structure: bool = False) -> dict:
  """Composition, smeared XRD and symmetry labels of one structure: species int32[K], fractions
  float32[K], xrd float32[4250], crystal_system int, spacegroup_number int.

  xrd_engine="jax": no pattern is computed here; the result holds `structure` (the JAX engine's
  structure_arrays) instead of `xrd`, for the caller to simulate in batches. store_structure: it
  also holds `structure` and the point-group `rotations` (prepare --store_structures).
  FeaturizationError names the step that failed (composition, xrd, symmetry), or a cell above
  the size limits (schema.DEFAULT_MAX_REFLECTIONS).
  """
  try:
    species, fractions = composition_lib.encode_composition(
        _element_amounts(structure), max_elements)
  except ValueError as e:
    raise FeaturizationError(f"composition: {e}") from None
  if xrd_engine not in XRD_ENGINES:
    raise ValueError(f"xrd_engine must be one of {XRD_ENGINES}, not {xrd_engine!r}")
  check_xrd_size(structure, max_reflections, max_xrd_work)
  pattern = {}
  if xrd_engine == "jax" or store_structure:
    # The engine (and jax) imported at first use only: the pymatgen path never loads them.
    from xxact_jax.xrd_engine import engine  # pylint: disable=g-import-not-at-top
    try:
      pattern["structure"] = engine.structure_arrays(structure)
    except ValueError as e:   # XRDEngineError: a species without scattering parameters, ...
      raise FeaturizationError(f"xrd: {engine_reason(e)} (--xrd_engine=jax)") from None
  if xrd_engine != "jax":
    try:
      pattern["xrd"] = xrd_lib.smear_sticks(*stick_pattern(structure))
    except Exception as e:  # pymatgen raises many types; report them all as data errors
      raise FeaturizationError(f"xrd: {type(e).__name__}: {e}") from None
  try:
    with warnings.catch_warnings():   # spglib's deprecation notices, once per structure
      warnings.simplefilter("ignore")
      crystal_system, spacegroup_number, *rotations = symmetry_labels(structure,
                                                                      store_structure)
  except Exception as e:
    raise FeaturizationError(f"symmetry: {type(e).__name__}: {e}") from None
  if rotations:
    pattern["rotations"] = rotations[0]
  return dict(species=species, fractions=fractions, **pattern,
              crystal_system=crystal_system, spacegroup_number=spacegroup_number)


def _number(raw: str) -> float:
  return float(re.sub(r"\(\d*\)$", "", raw.strip("'\"")))   # "3.86(2)" -> 3.86


def check_cif_cell(text: str) -> None:
  """Rejects cell parameters pymatgen would accept silently or fail on cryptically.

  pymatgen parses a negative length into another lattice (Si with a = -4: space group 139, not
  227) and fails deep inside on a zero length or flat angles. Only the first data block with a cell is
  checked (the one Structure.from_str uses).
  """
  for block in _CIF_BLOCK.split(text):
    fields = {name.lower(): raw for name, raw in _CIF_CELL_LINE.findall(block)}
    if not fields:
      continue
    values = {}
    for name, raw in fields.items():
      try:
        values[name] = _number(raw)
      except ValueError:
        raise FeaturizationError(f"cif parse failed: {name} is {raw!r}, not a number") from None
      if "length" in name and not 0 < values[name] < math.inf:
        raise FeaturizationError(
            f"cif parse failed: {name} is {raw}; a cell length must be positive (Å)")
      if "angle" in name and not 0 < values[name] < 180:
        raise FeaturizationError(
            f"cif parse failed: {name} is {raw}; a cell angle must be between 0 and 180°")
    angles = [values.get(f"_cell_angle_{n}") for n in ("alpha", "beta", "gamma")]
    if None not in angles:
      ca, cb, cg = (math.cos(math.radians(a)) for a in angles)
      if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-9:
        raise FeaturizationError(
            f"cif parse failed: cell angles alpha, beta, gamma = {angles} enclose no volume")
    return


def _cif_failure(text: str, error: Exception, messages: list[str]) -> str:
  """A reason for a CIF pymatgen could not parse that names the missing or broken part."""
  if isinstance(error, ZeroDivisionError):   # pymatgen's loop parser on a loop_ with no values
    return "malformed CIF: a loop_ has no columns or no values (a truncated CIF?)"
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      blocks = list(CifFile.from_str(text).data.values())
  except Exception as e:
    if "zip()" in str(e):   # a loop_ row count check deep in pymatgen
      return "malformed CIF: a loop_'s values do not fill its columns (a truncated CIF?)"
    return f"malformed CIF: {type(e).__name__}: {e}"
  if not blocks:
    return "no data_ block: the CIF text holds no structure"
  block = {k.lower(): v for k, v in blocks[0].data.items()}
  missing = [f for f in _CELL_FIELDS if f not in block]
  if missing:
    return f"missing cell parameter(s) {', '.join(missing)}"
  if "_atom_site_fract_x" not in block and "_atom_site_cartn_x" not in block:
    return "no atom sites (no _atom_site_fract_x loop)"
  occupancies = block.get("_atom_site_occupancy")
  if isinstance(occupancies, list):
    try:
      if all(_number(o) == 0 for o in occupancies):
        return "every atom site has zero occupancy (_atom_site_occupancy)"
    except ValueError:
      return f"_atom_site_occupancy holds a non-number: {occupancies}"
  detail = "; ".join(dict.fromkeys(" ".join(m.split()) for m in messages))
  return f"{type(error).__name__}: {error}" + (f" (pymatgen: {detail[:300]})" if detail else "")


def check_structure(structure: Structure) -> None:
  """Rejects a structure without sites or with a degenerate or non-finite cell."""
  if len(structure) == 0:
    raise FeaturizationError("structure: no atom sites")
  matrix = np.asarray(structure.lattice.matrix, np.float64)
  lengths = np.linalg.norm(matrix, axis=1)
  if not np.all(np.isfinite(matrix)):
    raise FeaturizationError(f"lattice: non-finite lattice vectors {matrix.tolist()}")
  volume = abs(float(np.linalg.det(matrix)))
  if not volume > 1e-6 * float(np.prod(lengths)):
    raise FeaturizationError(
        f"lattice: the cell volume is {volume:.3g} Å³ (a, b, c = "
        f"{', '.join(f'{x:.4g}' for x in lengths)} Å): zero or degenerate")
  if not np.all(np.isfinite(structure.frac_coords)):
    raise FeaturizationError("structure: non-finite site coordinates")


def structure_from_payload(kind: str, payload) -> Structure:
  """Builds a Structure from a reader payload: ("cif", text) or ("entry", dict); a
  FeaturizationError names what is wrong (empty text, a bad cell parameter, a truncated loop, no
  sites, a degenerate lattice, ...)."""
  if kind == "cif":
    if not isinstance(payload, str) or not payload.strip():
      raise FeaturizationError("cif parse failed: the CIF text is empty")
    check_cif_cell(payload)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      if kind == "cif":
        structure = Structure.from_str(payload, fmt="cif")
      elif kind == "entry":
        structure = ComputedStructureEntry.from_dict(payload).structure
      elif kind == "structure":
        structure = Structure.from_dict(payload)
      else:
        raise ValueError(f"Unknown payload kind {kind!r}.")
    except Exception as e:
      if kind == "cif":
        reason = _cif_failure(payload, e, [str(w.message) for w in caught])
      elif isinstance(e, ValueError) and str(e).startswith("Unknown payload kind"):
        raise
      else:
        reason = f"{type(e).__name__}: {e}"
      raise FeaturizationError(f"{kind} parse failed: {reason}") from None
  check_structure(structure)
  return structure
