"""X-ray wavelengths and Bragg's-law conversion of 2θ onto the Cu Kα scale.

The model was trained on patterns simulated at Cu Kα (pymatgen's "CuKa", the
2:1 intensity-weighted mean of Kα1 and Kα2). A pattern measured with another
anode is moved onto that scale through the d-spacings it encodes:
λ = 2 d sin θ, so sin θ_Cu = (λ_Cu / λ) sin θ.

Values in Å (Hölzer et al. 1997 / International Tables Vol. C, the same values
pymatgen uses): "Kα" is (2·Kα1 + Kα2) / 3, the unresolved doublet a laboratory
diffractometer without a monochromator records.
"""

import re
from typing import Union

import numpy as np

from xxact_jax import constants
from xxact_jax import physics

# Anode -> (Kα weighted, Kα1, Kα2) in Å.
ANODE_WAVELENGTHS = {
    "Cu": constants.CU_KA_LINES,
    "Mo": (0.71073, 0.70930, 0.71359),
    "Co": (1.79026, 1.78896, 1.79285),
    "Fe": (1.93735, 1.93604, 1.93998),
    "Cr": (2.29100, 2.28970, 2.29361),
    "Ag": (0.560885, 0.559421, 0.563813),
}
CU_KA = ANODE_WAVELENGTHS["Cu"][0]
MIN_WAVELENGTH, MAX_WAVELENGTH = 0.1, 5.0   # Å; also the limits of a file's stated wavelength

_LINE_INDEX = {"ka": 0, "kalpha": 0, "ka1": 1, "kalpha1": 1, "ka2": 2, "kalpha2": 2}
_NAME_PATTERN = re.compile(r"^([A-Za-z]{2})\s*(k\s*(?:a|alpha|α)\s*[12]?)?$", re.IGNORECASE)


def parse_wavelength(value: Union[str, float, int, None]) -> float:
  """Wavelength in Å from a number, a numeric string, or an anode name.

  Accepts "Cu", "Mo", "Co", "Fe", "Cr", "Ag" (Kα weighted), optionally with a
  line suffix ("CuKa1", "Mo Ka2", "CuKα"). None means Cu Kα.
  """
  if value is None:
    return CU_KA
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    wavelength = float(value)
  else:
    text = str(value).strip()
    try:
      wavelength = float(text)
    except ValueError:
      match = _NAME_PATTERN.match(text)
      anode = match.group(1).capitalize() if match else None
      if anode not in ANODE_WAVELENGTHS:
        raise ValueError(
            f"wavelength {text!r}: not a number in Å nor an anode name; known anodes: "
            + ", ".join(ANODE_WAVELENGTHS))
      line = (match.group(2) or "ka").lower().replace(" ", "").replace("α", "a")
      wavelength = ANODE_WAVELENGTHS[anode][_LINE_INDEX[line]]
  if not np.isfinite(wavelength) or not MIN_WAVELENGTH <= wavelength <= MAX_WAVELENGTH:
    raise ValueError(
        f"wavelength {value!r}: expected an X-ray wavelength between 0.1 and 5 Å")
  return wavelength


def to_cu_two_theta(two_theta: np.ndarray, wavelength: float) -> np.ndarray:
  """Maps 2θ (degrees) measured at `wavelength` (Å) onto the Cu Kα scale.

  Reflections that Cu Kα cannot reach (sin θ_Cu > 1, high angles of a
  short-wavelength source) come back as NaN.
  """
  return physics.rescale_two_theta(np.asarray(two_theta, dtype=np.float64), CU_KA / wavelength)


def doublet_of(wavelength: float, tolerance: float = 1e-3) -> tuple[float, float] | None:
  """(Kα1, Kα2) of the anode whose Kα mean or Kα1 line `wavelength` (Å) is, else None.

  A scan labelled with either was recorded with the unresolved doublet unless a monochromator
  removed Kα2; a Kα2-labelled or synchrotron wavelength has no doublet to strip.
  """
  for mean, ka1, ka2 in ANODE_WAVELENGTHS.values():
    if min(abs(wavelength - mean), abs(wavelength - ka1)) <= tolerance:
      return ka1, ka2
  return None
