"""Structure -> composition + smeared XRD + symmetry labels (the only pymatgen user with readers.py)."""

import warnings

import numpy as np
from pymatgen.analysis.diffraction.xrd import XRDCalculator
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from xxact_jax import constants
from xxact_jax.data import composition as composition_lib
from xxact_jax.data import xrd as xrd_lib

SYMPREC = 0.1
_CALCULATOR = XRDCalculator(wavelength=constants.XRD_WAVELENGTH)
_CRYSTAL_SYSTEM_INDEX = {name: i for i, name in enumerate(constants.CRYSTAL_SYSTEMS)}


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


def symmetry_labels(structure: Structure) -> tuple[int, int]:
  """(crystal system index 0..6, space group number 1..230) at symprec 0.1."""
  analyzer = SpacegroupAnalyzer(structure, symprec=SYMPREC)
  return (_CRYSTAL_SYSTEM_INDEX[analyzer.get_crystal_system()],
          int(analyzer.get_space_group_number()))


def featurize_structure(structure: Structure, max_elements: int) -> dict:
  """Composition, smeared XRD and symmetry labels of one structure.

  Returns:
    dict with species int32[K], fractions float32[K], xrd float32[4250],
    crystal_system int, spacegroup_number int.

  Raises:
    FeaturizationError: naming the step that failed (composition, xrd, symmetry).
  """
  try:
    species, fractions = composition_lib.encode_composition(
        _element_amounts(structure), max_elements)
  except ValueError as e:
    raise FeaturizationError(f"composition: {e}") from None
  try:
    xrd = xrd_lib.smear_sticks(*stick_pattern(structure))
  except Exception as e:  # pymatgen raises many types; report them all as data errors
    raise FeaturizationError(f"xrd: {type(e).__name__}: {e}") from None
  try:
    with warnings.catch_warnings():   # spglib's deprecation notices, once per structure
      warnings.simplefilter("ignore")
      crystal_system, spacegroup_number = symmetry_labels(structure)
  except Exception as e:
    raise FeaturizationError(f"symmetry: {type(e).__name__}: {e}") from None
  return dict(species=species, fractions=fractions, xrd=xrd,
              crystal_system=crystal_system, spacegroup_number=spacegroup_number)


def structure_from_payload(kind: str, payload) -> Structure:
  """Builds a Structure from a reader payload: ("cif", text) or ("entry", dict)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
      if kind == "cif":
        return Structure.from_str(payload, fmt="cif")
      if kind == "entry":
        return ComputedStructureEntry.from_dict(payload).structure
      if kind == "structure":
        return Structure.from_dict(payload)
    except Exception as e:
      raise FeaturizationError(f"{kind} parse failed: {type(e).__name__}: {e}") from None
  raise ValueError(f"Unknown payload kind {kind!r}.")
