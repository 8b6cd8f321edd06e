"""pymatgen's atomic scattering parameters as a table indexed by atomic number (host, numpy).

The numbers are read from pymatgen's own atomic_scattering_params.json at first use, so the engine
follows whatever pymatgen version `prepare` uses; importing this module does not need pymatgen.
"""

import functools
import importlib.util
import json
import os

import numpy as np

from xxact_jax import constants

# The heaviest atomic number the table can hold; pymatgen's file stops at Cf (98).
MAX_Z = constants.NUM_ELEMENTS
NUM_COEFFICIENTS = 4      # (a_i, b_i) pairs per element in pymatgen's file


class MissingPymatgenError(ImportError):
  """pymatgen (the source of the scattering parameters) is not installed."""


@functools.cache
def scattering_table() -> tuple[np.ndarray, np.ndarray]:
  """(coefficients float64[MAX_Z + 1, 4, 2], available bool[MAX_Z + 1]): row Z holds pymatgen's
  [[a_1, b_1], ..., [a_4, b_4]] for element Z; row 0 (padding) and the elements pymatgen lacks
  are zeros with available = False."""
  try:   # the file's path, without importing pymatgen.core
    spec = importlib.util.find_spec("pymatgen.analysis.diffraction")
  except ModuleNotFoundError:
    spec = None
  if spec is None or not spec.submodule_search_locations:
    raise MissingPymatgenError(
        "xrd_engine needs pymatgen's atomic scattering parameters "
        "(pymatgen/analysis/diffraction/atomic_scattering_params.json); install pymatgen.")
  path = os.path.join(spec.submodule_search_locations[0], "atomic_scattering_params.json")
  with open(path, "rb") as f:
    params = json.load(f)
  table = np.zeros((MAX_Z + 1, NUM_COEFFICIENTS, 2), np.float64)
  available = np.zeros(MAX_Z + 1, bool)
  for symbol, coefficients in params.items():
    z = constants.ATOMIC_NUMBER.get(symbol)
    if z is None:     # "D" (deuterium): pymatgen's sites call it D; structures_to_batch maps it
      continue
    coefficients = np.asarray(coefficients, np.float64)
    table[z, :len(coefficients)] = coefficients
    available[z] = True
  table.setflags(write=False)
  available.setflags(write=False)
  return table, available
