"""Host side of the XRD engine (numpy, float64): checks, reflection lists and shape buckets.

Reflections are enumerated here, per structure, exactly as pymatgen's XRDCalculator selects them
(reciprocal points inside the 2θ sphere, the Friedel half-space, sorted by |g| then -h, -k, -l):
a tight list per structure pads far less than a fixed hkl box, and its float64 order is what lets
the device merge equal-2θ reflections without a sort (XLA's CPU sort costs ~0.4 µs an element).
"""

import dataclasses
import math

import numpy as np

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.xrd_engine import scattering

# pymatgen AbstractDiffractionPatternCalculator: reflections whose 2θ round to the same multiple of
# TWO_THETA_TOL (degrees) are one peak; merged peaks at or below SCALED_INTENSITY_TOL on the
# 0-100 scale are dropped.
TWO_THETA_TOL = 1e-5
SCALED_INTENSITY_TOL = 1e-3

# Same guard and meaning as prepare's --max_reflections (schema.DEFAULT_MAX_REFLECTIONS):
# reciprocal points in the whole 2θ sphere, (4/3)π r³ V (the engine computes half of them).
DEFAULT_MAX_REFLECTIONS = 200_000

# Bucket sizes: 1 and 1.5 times powers of two, so padding wastes at most a third.
_MIN_REFLECTIONS = 64
_MIN_SITES = 4
_MIN_ELEMENTS = 8


class XRDEngineError(ValueError):
  """A structure the engine cannot simulate; the message starts with 'structure <index>:'."""


def wavelength_angstrom(wavelength) -> float:
  """A wavelength in Å from a number or a pymatgen radiation name ("CuKa", "MoKa", ...)."""
  if isinstance(wavelength, str):
    if wavelength == "CuKa":
      return constants.CU_KA_LINES[0]
    try:
      from pymatgen.analysis.diffraction.xrd import WAVELENGTHS  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise scattering.MissingPymatgenError(
          f"radiation names other than CuKa need pymatgen ({wavelength!r}); pass Å instead") from e
    if wavelength not in WAVELENGTHS:
      raise ValueError(f"unknown radiation {wavelength!r}; one of {sorted(WAVELENGTHS)} or Å")
    return float(WAVELENGTHS[wavelength])
  value = float(wavelength)
  if not 0 < value < math.inf:
    raise ValueError(f"the wavelength must be a positive number of Å, not {wavelength!r}")
  return value


def sphere_radii(wavelength: float, two_theta_range) -> tuple[float, float]:
  """(min_r, max_r) of |g| = 2 sin θ / λ in 1/Å, as pymatgen computes them."""
  return tuple(physics.inverse_d(float(t), wavelength) for t in two_theta_range)


def bucket(n: int, minimum: int) -> int:
  """The smallest size 2^k or 1.5·2^k that holds n (at least `minimum`)."""
  size = minimum
  while size < n:
    size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
  return size


def check_structure(index: int, lattice, frac_coords, numbers, occupancies) -> None:
  """Raises XRDEngineError naming `index` for a structure the engine cannot simulate."""
  lattice = np.asarray(lattice, np.float64)
  if lattice.shape != (3, 3) or not np.all(np.isfinite(lattice)):
    raise XRDEngineError(f"structure {index}: the lattice is not a finite 3×3 matrix")
  lengths = np.linalg.norm(lattice, axis=1)
  volume = abs(float(np.linalg.det(lattice)))
  # Same rule as featurize.check_structure: a cell that encloses (almost) no volume.
  if not volume > 1e-6 * float(np.prod(lengths)):
    raise XRDEngineError(
        f"structure {index}: the cell volume is {volume:.3g} Å³ (a, b, c = "
        f"{', '.join(f'{x:.4g}' for x in lengths)} Å): zero or degenerate")
  numbers = np.asarray(numbers)
  occupancies = np.asarray(occupancies, np.float64)
  present = numbers > 0
  if not np.any(present & (occupancies > 0)):
    raise XRDEngineError(f"structure {index}: no atom sites")
  if not np.all(np.isfinite(np.asarray(frac_coords, np.float64)[present])):
    raise XRDEngineError(f"structure {index}: non-finite site coordinates")
  if not np.all(np.isfinite(occupancies[present])) or np.any(occupancies[present] < 0):
    raise XRDEngineError(f"structure {index}: occupancies must be finite and non-negative")
  _, available = scattering.scattering_table()
  present_z = np.unique(numbers[present])
  bad = [int(z) for z in present_z if z > scattering.MAX_Z or not available[z]]
  if bad:
    names = ", ".join(constants.ELEMENTS[z - 1] if z <= constants.NUM_ELEMENTS else f"Z={z}"
                      for z in bad)
    raise XRDEngineError(
        f"structure {index}: no atomic scattering parameters for {names} "
        f"(pymatgen's table stops at Cf, Z = 98)")


def _size_estimate(volume, max_r):
  """Expected reciprocal points inside the 2θ sphere, as featurize.check_xrd_size: (4/3)π r³ V."""
  return 4 / 3 * math.pi * max_r ** 3 * volume


def _reflections_many(lattices: np.ndarray, wavelength: float, two_theta_range):
  """Reflections of many cells in one vectorised pass: (hkl int32[M, 3], offsets int64[N + 1]).

  Rows offsets[i]:offsets[i + 1] hold cell i's reflections, sorted by |g|. See reflections().
  """
  count = len(lattices)
  min_r, max_r = sphere_radii(wavelength, two_theta_range)
  recip = (np.linalg.inv(lattices).transpose(0, 2, 1) * 2 * np.pi) / (2 * np.pi)
  # h = g·a, so |h| ≤ max_r·|a| bounds the half box (room left for the 1e-8 tolerance below).
  bounds = np.floor((max_r + 1e-6) * np.linalg.norm(lattices, axis=2)).astype(np.int64)
  hb, kb = bounds[:, 0], bounds[:, 1]
  # Columns (h, k) of each half box ...
  columns = (hb + 1) * (2 * kb + 1)
  cell = np.repeat(np.arange(count), columns)
  rank = np.arange(int(columns.sum())) - np.repeat(np.cumsum(columns) - columns, columns)
  width = 2 * kb[cell] + 1
  h, k = rank // width, rank % width - kb[cell]
  # ... and for each the l range inside the sphere from the quadratic |v + l c*|² ≤ r²
  # (v = h a* + k b*), widened by one; the exact test follows.
  r = recip[cell]
  v = h[:, None] * r[:, 0] + k[:, None] * r[:, 1]
  c = r[:, 2]
  c2 = np.einsum("ij,ij->i", c, c)
  vc = np.einsum("ij,ij->i", v, c)
  disc = vc * vc - c2 * (np.einsum("ij,ij->i", v, v) - (max_r + 1e-6) ** 2)
  keep = disc >= 0
  cell, h, k, vc, c2, root = cell[keep], h[keep], k[keep], vc[keep], c2[keep], np.sqrt(disc[keep])
  lo = np.floor((-vc - root) / c2).astype(np.int64) - 1
  hi = np.ceil((-vc + root) / c2).astype(np.int64) + 1
  # The Friedel half-space: h > 0, or h = 0 and k > 0, or h = k = 0 and l > 0.
  lo = np.where((h == 0) & (k == 0), np.maximum(lo, 1), lo)
  lo = np.where((h == 0) & (k < 0), hi + 1, lo)
  counts = np.maximum(hi - lo + 1, 0)
  cell, h, k = np.repeat(cell, counts), np.repeat(h, counts), np.repeat(k, counts)
  l = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
  # Cartesian point h·a* + k·b* + l·c* and its squared norm, with pymatgen's float64 operations.
  r = recip[cell]
  hf, kf, lf = h.astype(np.float64), k.astype(np.float64), l.astype(np.float64)
  p = [(hf * r[:, 0, d] + kf * r[:, 1, d]) + lf * r[:, 2, d] for d in range(3)]
  d2 = p[0] * p[0] + p[1] * p[1] + p[2] * p[2]
  g = np.sqrt(d2)
  keep = (g <= max_r) if max_r < 1.0 else (d2 < max_r * max_r + 1e-8)
  keep &= g >= min_r
  cell, h, k, l, g = cell[keep], h[keep], k[keep], l[keep], g[keep]
  # Sorted by cell, then |g|. pymatgen breaks ties in |g| by (-h, -k, -l); any order of equal |g|
  # gives the same merged peaks (equal |g| means equal 2θ), so one float64 key serves.
  order = np.argsort(cell + g / (max_r * (1 + 1e-9)), kind="stable")
  hkl = np.stack([h[order], k[order], l[order]], axis=1).astype(np.int32)
  offsets = np.zeros(count + 1, np.int64)
  np.cumsum(np.bincount(cell, minlength=count), out=offsets[1:])
  return hkl, offsets


def reflections(lattice, wavelength: float, two_theta_range,
                max_reflections: float = DEFAULT_MAX_REFLECTIONS, index: int = 0) -> np.ndarray:
  """Miller indices int32[n, 3] of the reflections pymatgen keeps, sorted by |g|.

  pymatgen takes the reciprocal points with |g| ≤ max_r (find_points_in_spheres: |g| ≤ r when
  r < 1 Å⁻¹, else |g|² < r² + 1e-8), drops |g| < min_r, keeps the half-space h > 0, or h = 0 and
  k > 0, or h = k = 0 and l > 0 (Friedel pairs have equal intensity), and sorts by (|g|, -h, -k,
  -l). |g| is computed with its float64 operations, so the sphere's edge and the merging agree.
  """
  lattice = np.asarray(lattice, np.float64)
  estimate = _size_estimate(abs(float(np.linalg.det(lattice))),
                            sphere_radii(wavelength, two_theta_range)[1])
  if estimate > max_reflections:
    raise XRDEngineError(_too_large(index, estimate, two_theta_range, max_reflections))
  return _reflections_many(lattice[None], wavelength, two_theta_range)[0]


def _too_large(index, estimate, two_theta_range, max_reflections) -> str:
  return (f"structure {index}: cell too large: about {estimate:.3g} reflections up to "
          f"2θ = {two_theta_range[1]:g}°, above the limit of {max_reflections:.3g}")


@dataclasses.dataclass
class Planned:
  """One structure ready for the device: its reflections and per-site element slots."""
  index: int
  lattice: np.ndarray          # float64[3, 3]
  frac_coords: np.ndarray      # float64[s, 3]
  occupancies: np.ndarray      # float64[s]
  slots: np.ndarray            # int32[s]: index into elements
  elements: np.ndarray         # int32[e]: atomic numbers present
  hkl: np.ndarray              # int32[n, 3]
  # Sample effects (sample.SampleEffects), neutral by default.
  texture_hkl: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
  march_r: float = 1.0
  b_factor: float = 0.0

  @property
  def shape_key(self) -> tuple[int, int, int]:
    """(sites, reflections, elements) bucket sizes."""
    return (bucket(len(self.occupancies), _MIN_SITES), bucket(len(self.hkl), _MIN_REFLECTIONS),
            bucket(len(self.elements), _MIN_ELEMENTS))


def plan_structures(structures, wavelength: float, two_theta_range,
                    max_reflections: float = DEFAULT_MAX_REFLECTIONS, *,
                    errors: str = "raise", indices=None) -> list:
  """Planned of each structure (lattice [3, 3], frac_coords [s, 3], numbers [s], occupancies [s];
  number 0 or occupancy 0 is padding) in input order: checked, its reflections and element slots
  listed, vectorised over all. errors="raise" raises XRDEngineError for the first bad structure,
  "return" puts it in the structure's place; `indices` name the structures in errors (default:
  their positions)."""
  if errors not in ("raise", "return"):
    raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
  count = len(structures)
  indices = list(range(count)) if indices is None else list(indices)
  if count == 0:
    return []
  lattices = np.stack([np.asarray(s[0], np.float64).reshape(3, 3) for s in structures])
  sites = np.array([len(s[2]) for s in structures])
  cell = np.repeat(np.arange(count), sites)
  frac = np.concatenate([np.asarray(s[1], np.float64).reshape(-1, 3) for s in structures])
  numbers = np.concatenate([np.asarray(s[2], np.int64).reshape(-1) for s in structures])
  occupancies = np.concatenate([np.asarray(s[3], np.float64).reshape(-1) for s in structures])

  # Vectorised screening; a flagged structure gets its message from check_structure.
  _, available = scattering.scattering_table()
  _, max_r = sphere_radii(wavelength, two_theta_range)
  finite = np.isfinite(lattices).all(axis=(1, 2))
  safe = np.where(finite[:, None, None], lattices, np.eye(3))
  volume = np.abs(np.linalg.det(safe))
  bad = ~finite | ~(volume > 1e-6 * np.prod(np.linalg.norm(safe, axis=2), axis=1))
  present = numbers > 0
  active = present & (occupancies > 0)
  bad |= np.bincount(cell[active], minlength=count) == 0
  site_bad = present & (~np.isfinite(frac).all(axis=1) | ~np.isfinite(occupancies)
                        | (occupancies < 0) | (numbers > scattering.MAX_Z)
                        | ~available[np.clip(numbers, 0, scattering.MAX_Z)])
  bad |= np.bincount(cell[site_bad], minlength=count) > 0
  estimate = _size_estimate(volume, max_r)
  too_large = ~bad & (estimate > max_reflections)
  results: list = [None] * count
  failed = bad | too_large
  for i in np.flatnonzero(failed):
    try:
      check_structure(indices[i], *structures[i])
      if too_large[i]:
        raise XRDEngineError(
            _too_large(indices[i], estimate[i], two_theta_range, max_reflections))
      failed[i] = False
    except XRDEngineError as e:
      if errors == "raise":
        raise
      results[i] = e
  good = np.flatnonzero(~failed)
  if not len(good):
    return results

  hkl, offsets = _reflections_many(lattices[good], wavelength, two_theta_range)
  # Element slots: the distinct atomic numbers of each structure, in increasing order.
  keep = active & np.isin(cell, good)
  cell, frac, numbers, occupancies = cell[keep], frac[keep], numbers[keep], occupancies[keep]
  keys, slot_of = np.unique(cell * (scattering.MAX_Z + 1) + numbers, return_inverse=True)
  key_cell = keys // (scattering.MAX_Z + 1)
  first_key = np.searchsorted(key_cell, np.arange(count + 1))
  slots = (slot_of - first_key[cell]).astype(np.int32)
  site_start = np.searchsorted(cell, np.arange(count + 1))
  for j, i in enumerate(good):
    a, b = site_start[i], site_start[i + 1]
    results[i] = Planned(
        index=indices[i], lattice=lattices[i], frac_coords=frac[a:b], occupancies=occupancies[a:b],
        slots=slots[a:b], elements=(keys[first_key[i]:first_key[i + 1]]
                                    - i * (scattering.MAX_Z + 1)).astype(np.int32),
        hkl=hkl[offsets[j]:offsets[j + 1]])
  return results


def plan_structure(index: int, lattice, frac_coords, numbers, occupancies, wavelength: float,
                   two_theta_range, max_reflections: float = DEFAULT_MAX_REFLECTIONS) -> Planned:
  """plan_structures for one structure."""
  return plan_structures([(lattice, frac_coords, numbers, occupancies)], wavelength,
                         two_theta_range, max_reflections, indices=[index])[0]


def batch_size(num_reflections: int, max_batch: int) -> int:
  """Structures per device call for a reflection bucket: bounds the [B, R, 63] smearing
  temporaries (the [B, R, S] phases are chunked on the device). Depends on R alone, so the
  pattern program compiles once per R bucket."""
  size = max(1, min(max_batch, 2 ** 18 // num_reflections))
  return 1 << (size.bit_length() - 1)


def pack(planned: list[Planned], key: tuple[int, int, int], batch: int) -> dict:
  """Stacks planned structures into the padded arrays of one bucket (batch rows)."""
  sites, num_reflections, num_elements = key
  out = dict(lattice=np.tile(np.eye(3), (batch, 1, 1)),
             frac_coords=np.zeros((batch, sites, 3)), occupancies=np.zeros((batch, sites)),
             slots=np.zeros((batch, sites), np.int32),
             elements=np.zeros((batch, num_elements), np.int32),
             hkl=np.zeros((batch, num_reflections, 3), np.int32),
             num_reflections=np.zeros(batch, np.int32),
             texture_hkl=np.zeros((batch, 3)), march_r=np.ones(batch), b_factor=np.zeros(batch))
  for row, p in enumerate(planned):
    out["num_reflections"][row] = len(p.hkl)
    for name in ("lattice", "texture_hkl", "march_r", "b_factor"):
      out[name][row] = getattr(p, name)
    for name in ("frac_coords", "occupancies", "slots", "elements", "hkl"):
      value = getattr(p, name)
      out[name][row, :len(value)] = value
  return out
