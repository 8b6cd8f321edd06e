"""Batched simulation: padded structure arrays or pymatgen Structures -> smeared XRD patterns."""

import collections
import dataclasses

import jax
import numpy as np

from xxact_jax import constants
from xxact_jax.xrd_engine import device
from xxact_jax.xrd_engine import planning
from xxact_jax.xrd_engine import sample as sample_lib
from xxact_jax.xrd_engine import scattering

DEFAULT_TWO_THETA_RANGE = (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX)
DEFAULT_MAX_BATCH = 256


# Device calls in flight at once: enough to overlap host packing with device work, few enough
# that a dataset's patterns and sticks are not all held on the device.
_IN_FLIGHT = 4


@dataclasses.dataclass
class Result:
  """patterns float32[N, 4250] (max 100; zeros for a failed structure); sticks[i] = (2θ
  float64[n], intensity float64[n] on pymatgen's 0-100 scale), the peaks pymatgen get_pattern
  keeps, when asked for; errors: {position: message} of the structures that failed (errors=
  "return" only)."""
  patterns: np.ndarray
  sticks: list | None = None
  errors: dict = dataclasses.field(default_factory=dict)


def _batches(planned: list, max_batch: int):
  """(bucket key, rows per call, planned structures of one call).

  Structures are grouped by reflection bucket R and taken in increasing site bucket S: a call
  holds `batch_size(R)` structures at the S bucket where it fills up (structures of smaller S
  are padded up), and the last call of an R group is padded to a power of two. So the pattern
  program compiles about twice per R bucket, the structure factors about once per (R, S) with
  enough structures; a few thousand structures need ~20 compiles.
  """
  groups: dict = {}
  for p in planned:
    sites, reflections, elements = p.shape_key
    groups.setdefault((reflections, elements), {}).setdefault(sites, []).append(p)
  for (reflections, elements), by_sites in sorted(groups.items()):
    size = planning.batch_size(reflections, max_batch)
    members = []
    for sites in sorted(by_sites):
      members += by_sites[sites]
      full = len(members) // size * size
      for begin in range(0, full, size):
        yield (sites, reflections, elements), size, members[begin:begin + size]
      members = members[full:]
    if members:
      rows = min(size, 1 << (len(members) - 1).bit_length())
      yield (sites, reflections, elements), rows, members


def simulate_planned(planned: list, wavelength: float, *, sigma: float = constants.XRD_SIGMA,
                     max_batch: int = DEFAULT_MAX_BATCH, return_sticks: bool = False,
                     errors: str = "raise") -> Result:
  """Runs planned structures through the device, bucket by bucket; results in input order.

  planned: planning.plan_structures' list; with errors="return", XRDEngineError entries in it
  are passed through to Result.errors, and a pattern with no intensity on the grid is reported
  there too instead of raised.
  """
  table = scattering.scattering_table()[0]
  patterns = np.zeros((len(planned), constants.NUM_XRD_POINTS), np.float32)
  sticks = [None] * len(planned) if return_sticks else None
  failed = {i: str(p) for i, p in enumerate(planned) if isinstance(p, Exception)}
  if failed and errors == "raise":
    raise planned[min(failed)]
  good = [p for p in planned if not isinstance(p, Exception)]
  position = {id(p): i for i, p in enumerate(planned)}

  def collect(chunk, outputs):
    pattern, peak = np.asarray(outputs[0]), np.asarray(outputs[1])
    if return_sticks:
      two_theta, intensity = np.asarray(outputs[2]), np.asarray(outputs[3])
    for row, p in enumerate(chunk):
      i = position[id(p)]
      if not peak[row] > 0 or not np.all(np.isfinite(pattern[row])):
        message = (f"structure {p.index}: the XRD pattern has no intensity on the "
                   f"{constants.TWO_THETA_MIN:g}-{constants.TWO_THETA_MAX:g}° grid")
        if errors == "raise":
          raise planning.XRDEngineError(message)
        failed[i] = message
        continue
      patterns[i] = pattern[row]
      if return_sticks:
        keep = intensity[row] > 0
        sticks[i] = (two_theta[row][keep], intensity[row][keep])

  pending = collections.deque()
  with jax.enable_x64(True):
    for key, rows, chunk in _batches(good, max_batch):
      if len(pending) == _IN_FLIGHT:
        collect(*pending.popleft())
      arrays = planning.pack(chunk, key, rows)
      # Asynchronous dispatch: the host packs the next call while the device works.
      pending.append((chunk, device.simulate_padded(arrays, np.float64(wavelength), table,
                                                    sigma=float(sigma))))
    while pending:
      collect(*pending.popleft())
  return Result(patterns, sticks, dict(sorted(failed.items())))


def simulate_arrays(lattice, frac_coords, numbers, occupancies,
                    wavelength=constants.XRD_WAVELENGTH, *,
                    two_theta_range=DEFAULT_TWO_THETA_RANGE, sigma: float = constants.XRD_SIGMA,
                    max_batch: int = DEFAULT_MAX_BATCH,
                    max_reflections: float = planning.DEFAULT_MAX_REFLECTIONS,
                    return_sticks: bool = False, errors: str = "raise",
                    effects: sample_lib.SampleEffects | None = None) -> Result:
  """Smeared XRD patterns of padded structures, as pymatgen get_pattern + xrd.smear_sticks.

  Args:
    lattice, frac_coords, numbers, occupancies: float[B, 3, 3] in Å (rows = lattice vectors,
      pymatgen's lattice.matrix), float[B, S, 3], int[B, S] atomic numbers (0 = padding; a
      disordered site is one entry per species), float[B, S] (1 for an ordered site).
    wavelength: Å, or a pymatgen radiation name ("CuKa", "MoKa", ...).
    two_theta_range: reflections kept (degrees); the grid stays 5-90° in 0.02° steps.
    sigma, max_batch: Gaussian σ in degrees; most structures per device call.
    max_reflections: refuse a cell whose 2θ sphere holds more reciprocal points than this,
      estimated as (4/3)π r³ V like prepare's --max_reflections (the engine computes half).
    return_sticks, errors: also return pymatgen's stick lists; "raise" (XRDEngineError
      'structure <i>: ...' for a structure without sites, with a degenerate cell, an element
      without scattering parameters, or too large) or "return" (Result.errors names them).
    effects: per-structure strain, preferred orientation and Debye–Waller factor
      (sample.SampleEffects); None: the ideal powder pymatgen simulates.
  """
  wavelength = planning.wavelength_angstrom(wavelength)
  lattice = np.asarray(lattice, np.float64)
  if lattice.ndim != 3 or lattice.shape[1:] != (3, 3):
    raise ValueError(f"lattice must be [B, 3, 3], not {lattice.shape}")
  if effects is not None:
    effects.check(len(lattice))
  count = len(lattice)
  return _simulate([None] * count, [(lattice[i], frac_coords[i], numbers[i], occupancies[i])
                                    for i in range(count)], list(range(count)), wavelength,
                   effects, two_theta_range, max_reflections, errors, sigma=sigma,
                   max_batch=max_batch, return_sticks=return_sticks)


def _simulate(planned: list, arrays: list, indices: list, wavelength: float, effects,
              two_theta_range, max_reflections, errors: str, **kwargs) -> Result:
  """simulate_planned of the structures `arrays` (positions `indices` of `planned`, whose other
  entries hold their errors already) after `effects`, planned with plan_structures."""
  if effects is not None and arrays:
    lattices = effects.strained(np.stack([a[0] for a in arrays]), indices)
    arrays = [(lattice, *rest) for lattice, (_, *rest) in zip(lattices, arrays)]
  for i, p in zip(indices, planning.plan_structures(
      arrays, wavelength, two_theta_range, max_reflections, errors=errors, indices=indices)):
    planned[i] = p
  if effects is not None:   # each structure's preferred orientation and B
    planned = [p if isinstance(p, Exception) else dataclasses.replace(
        p, **effects.per_structure(i)) for i, p in enumerate(planned)]
  return simulate_planned(planned, wavelength, errors=errors, **kwargs)


def structure_arrays(structure, index: int = 0):
  """(lattice [3,3], frac_coords [s,3], numbers [s], occupancies [s]) of a pymatgen Structure:
  one entry per (site, species), as XRDCalculator loops over site.species."""
  matrix = np.asarray(structure.lattice.matrix, np.float64)
  if any(k.startswith("U11") for k in getattr(structure, "site_properties", {})):
    raise planning.XRDEngineError(
        f"structure {index}: anisotropic displacement parameters (U*_cif) are not modelled")
  coords, numbers, occupancies = [], [], []
  for site in structure:
    for species, occupancy in site.species.items():
      z = getattr(species, "Z", 0) or 0
      if not z:
        raise planning.XRDEngineError(
            f"structure {index}: species {species} is not an element (no scattering parameters)")
      coords.append(site.frac_coords)
      numbers.append(int(z))
      occupancies.append(float(occupancy))
  return (matrix, np.asarray(coords, np.float64).reshape(-1, 3),
          np.asarray(numbers, np.int32), np.asarray(occupancies, np.float64))


def structures_to_batch(structures, sites: int | None = None) -> dict:
  """Padded arrays (lattice, frac_coords, numbers, occupancies) of pymatgen Structures.

  sites: pad to this many entries (default: the most any structure needs).
  """
  parts = [structure_arrays(s, i) for i, s in enumerate(structures)]
  need = max((len(p[2]) for p in parts), default=0)
  sites = need if sites is None else sites
  if sites < need:
    raise ValueError(f"sites={sites} is fewer than the {need} entries a structure needs")
  batch = dict(lattice=np.zeros((len(parts), 3, 3)),
               frac_coords=np.zeros((len(parts), sites, 3)),
               numbers=np.zeros((len(parts), sites), np.int32),
               occupancies=np.zeros((len(parts), sites)))
  for i, (matrix, *per_site) in enumerate(parts):
    batch["lattice"][i] = matrix
    for name, value in zip(("frac_coords", "numbers", "occupancies"), per_site):
      batch[name][i, :len(value)] = value
  return batch


def simulate(structures, wavelength=constants.XRD_WAVELENGTH, *,
             two_theta_range=DEFAULT_TWO_THETA_RANGE, sigma: float = constants.XRD_SIGMA,
             max_batch: int = DEFAULT_MAX_BATCH,
             max_reflections: float = planning.DEFAULT_MAX_REFLECTIONS,
             return_sticks: bool = False, errors: str = "raise",
             effects: sample_lib.SampleEffects | None = None):
  """Smeared patterns float32[N, 4250] of pymatgen Structures (a Result if return_sticks or
  errors="return"). Each structure is planned on its own (no global padding); see
  simulate_arrays for the arguments.
  """
  wavelength = planning.wavelength_angstrom(wavelength)
  if effects is not None:
    effects.check(len(structures))
  planned: list = [None] * len(structures)
  arrays, indices = [], []
  for i, structure in enumerate(structures):
    try:
      arrays.append(structure_arrays(structure, i))
      indices.append(i)
    except planning.XRDEngineError as e:
      if errors == "raise":
        raise
      planned[i] = e
  result = _simulate(planned, arrays, indices, wavelength, effects, two_theta_range,
                     max_reflections, errors, sigma=sigma, max_batch=max_batch,
                     return_sticks=return_sticks)
  return result if (return_sticks or errors == "return") else result.patterns
