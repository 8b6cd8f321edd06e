"""Crystal structures stored beside the patterns (prepare --store_structures), host side.

A row holds what the train step needs to simulate the pattern again on the device with effects
that act per reflection (xxact_jax.data.resimulate): the lattice, the sites (fractional
coordinates, atomic numbers, occupancies; one entry per species of a disordered site), the
point-group rotations in the lattice basis (a strain must keep the symmetry), and the Miller
indices of the reflections in the 2θ sphere widened by schema.REFLECTION_MARGIN, sorted by |g|.
A structure larger than the dataset's padding is not stored (has_structure = 0): training uses
its stored pattern.

The atomic scattering parameters (pymatgen's, read at prepare time) go into metadata.json, so
training needs no pymatgen.
"""

import numpy as np

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.data import schema


def reflection_two_theta_range(wavelength: float = constants.CU_KA_LINES[0],
                               margin: float = schema.REFLECTION_MARGIN) -> tuple[float, float]:
  """2θ range (degrees) whose sphere holds every reflection a strain of up to `margin` can bring
  onto the 5-90° grid: |g| from r(5°) / (1 + margin) to r(90°) · (1 + margin)."""
  lo, hi = (physics.inverse_d(t, wavelength)
            for t in (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX))
  return (physics.two_theta(physics.bragg_sin_theta(lo / (1 + margin), wavelength)),
          physics.two_theta(physics.bragg_sin_theta(hi * (1 + margin), wavelength)))


def point_group_rotations(operations) -> np.ndarray:
  """Distinct rotation parts int64[n, 3, 3] of symmetry operations in the lattice basis (pymatgen
  SymmOps from SpacegroupAnalyzer.get_symmetry_operations(cartesian=False)). In a skewed basis
  their entries can exceed the int8 the dataset stores; `pack` then declines the structure."""
  rotations = {tuple(np.rint(op.rotation_matrix).astype(np.int64).ravel()) for op in operations}
  return np.asarray(sorted(rotations), np.int64).reshape(-1, 3, 3)


def pack(lattice, frac_coords, numbers, occupancies, rotations, *, sites: int,
         reflections: int) -> dict | str:
  """One row of the structure arrays (schema.structure_fields) padded to `sites` and
  `reflections`, or why it does not fit; the structure as xrd_engine.structure_arrays, with its
  point-group `rotations` int[n, 3, 3] (point_group_rotations)."""
  from xxact_jax.xrd_engine import planning  # pylint: disable=g-import-not-at-top
  numbers = np.asarray(numbers)
  if len(numbers) > sites:
    return f"{len(numbers)} site entries, above --structure_sites={sites}"
  if len(rotations) > schema.MAX_ROTATIONS:
    return f"{len(rotations)} point-group operations, above {schema.MAX_ROTATIONS}"
  rotations = np.asarray(rotations)
  if rotations.size and np.abs(rotations).max() > np.iinfo(np.int8).max:
    # A valid cell given in a skewed basis: its rotations there have large entries.
    return (f"point-group rotations with entries up to {np.abs(rotations).max()} in this "
            "lattice basis do not fit int8")
  hkl = planning.reflections(lattice, constants.CU_KA_LINES[0], reflection_two_theta_range())
  if len(hkl) > reflections:
    return f"{len(hkl)} reflections, above --structure_reflections={reflections}"
  if len(hkl) and np.abs(hkl).max() > np.iinfo(np.int8).max:
    return f"Miller indices up to {np.abs(hkl).max()} do not fit int8"
  row = {name: np.full(f.row_shape, f.fill_value, f.dtype)
         for name, f in schema.structure_fields(sites, reflections).items()}
  n = len(numbers)
  row["has_structure"][()] = 1
  row["lattice"][:] = lattice
  row["frac_coords"][:n] = np.asarray(frac_coords) % 1.0
  row["atomic_numbers"][:n] = numbers
  row["occupancies"][:n] = occupancies
  row["rotations"][:len(rotations)] = rotations
  row["hkl"][:len(hkl)] = hkl
  row["num_reflections"][()] = len(hkl)
  return row


def scattering_metadata() -> dict:
  """{symbol: [[a_1, b_1], ..., [a_4, b_4]]}: pymatgen's atomic scattering parameters of every
  element it has (metadata.json "structures"."scattering")."""
  from xxact_jax.xrd_engine import scattering  # pylint: disable=g-import-not-at-top
  table, available = scattering.scattering_table()
  return {constants.ELEMENTS[z - 1]: table[z].tolist() for z in np.flatnonzero(available)}


def coefficient_table(metadata: dict) -> np.ndarray:
  """float32[NUM_ELEMENTS + 1, 4, 2] scattering parameters by atomic number from a dataset's
  metadata (zeros for elements it has none for); ValueError if it stores no structures."""
  stored = metadata.get("structures")
  if not stored:
    raise ValueError("the dataset stores no crystal structures; prepare it with "
                     "--store_structures to simulate patterns during training")
  table = np.zeros((constants.NUM_ELEMENTS + 1, 4, 2), np.float32)
  for symbol, coefficients in stored["scattering"].items():
    coefficients = np.asarray(coefficients, np.float32)
    table[constants.ATOMIC_NUMBER[symbol], :len(coefficients)] = coefficients
  return table
