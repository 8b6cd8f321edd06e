"""Random crystals of known symmetry, written as a CIF column that `prepare` reads like mp_36k.

Why: a model trained on ~30 k Materials Project structures reads symmetry from the peaks of
compounds like those, and meets measured scans of minerals and molecular crystals it has never
seen (docs/MEASURED.md, "Where the remaining gap is"). Crystals drawn at random, in every space
group, with random species and coordinates, teach the XRD branch how a lattice's symmetry shows
in peak positions, apart from any chemistry it has memorised.

A crystal is drawn as:
  1. a space group (from a prepared dataset's train-split histogram, or uniform over the seven
     crystal systems and then over their groups);
  2. 1–`max_elements` elements (their number and the elements from the same dataset, or uniform);
  3. 1–`max_orbits` orbits, each an element at a random fractional position whose coordinates
     snap to a special value (0, 1/4, 1/3, 1/2, ...) with probability `special_probability`, so
     that special Wyckoff positions (and their smaller multiplicities) occur as in real crystals;
     the group's operations expand each orbit and coincident images merge;
  4. a lattice of the group's crystal system with random axis ratios and angles, scaled to the
     volume the atoms fill at a random packing fraction (atomic radii from pymatgen), then enlarged
     if two atoms sit closer than `min_distance_factor` × the sum of their radii.
Structures with more than `max_sites` sites, or that need more than `max_expansion` to separate
their atoms, are drawn again. Labels are not taken from the draw: `prepare` finds the symmetry of
the written structure like any other, so a crystal whose special positions raise its symmetry is
labelled by the symmetry it has. Synthetic crystals have no formation energy or band gap.

  python -m xxact_jax.synthesize --count=30000 --like=/data/mp36k --output=synthetic.csv.gz
"""

import csv
import dataclasses
import functools
import gzip
import math
import time
from typing import Iterator

import numpy as np

from xxact_jax import constants
from xxact_jax import progress as progress_lib
from xxact_jax.targets import SYSTEM_SPACEGROUPS
from xxact_jax.targets import crystal_system_of  # pylint: disable=unused-import

SPECIAL_VALUES = (0.0, 1 / 8, 1 / 6, 1 / 4, 1 / 3, 3 / 8, 1 / 2, 5 / 8, 2 / 3, 3 / 4, 5 / 6, 7 / 8)
# Elements with an atomic radius in pymatgen and a scattering factor in the XRD tables; noble
# gases and elements heavier than Bi are left out (rare in the crystals this package meets).
_MAX_Z = 83
_NOBLE_GASES = (2, 10, 18, 36, 54)


def _drawable(weights: np.ndarray) -> np.ndarray:
  """Per-Z weights [NUM_ELEMENTS + 1] with the elements never drawn set to zero."""
  weights = np.asarray(weights, float).copy()
  weights[0] = 0.0
  weights[_MAX_Z + 1:] = 0.0
  weights[list(_NOBLE_GASES)] = 0.0
  return weights


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  max_sites: int = 80               # sites per cell, after expansion by the space group
  max_orbits: int = 6
  max_elements: int = 4
  special_probability: float = 0.5  # per fractional coordinate
  packing: tuple = (0.4, 0.7)       # packing-fraction range of the atoms' spheres
  axis_ratio: tuple = (0.5, 2.5)    # b/a and c/a range, where the crystal system frees them
  min_distance_factor: float = 0.6  # nearest pair ≥ this × (r_i + r_j)
  max_expansion: float = 1.3        # largest lattice enlargement allowed to reach that distance
  attempts: int = 100               # draws per crystal before giving up on its space group

  def check(self) -> "SyntheticConfig":
    if not 1 <= self.max_elements <= constants.NUM_ELEMENTS:
      raise ValueError(f"max_elements must lie in [1, {constants.NUM_ELEMENTS}], "
                       f"got {self.max_elements}")
    if self.max_orbits < 1 or self.max_sites < 1:
      raise ValueError(f"max_orbits and max_sites must be positive, got {self.max_orbits}, "
                       f"{self.max_sites}")
    if not 0 <= self.special_probability <= 1:
      raise ValueError(f"special_probability must lie in [0, 1], got {self.special_probability}")
    if not 0 < self.packing[0] <= self.packing[1] < 1:
      raise ValueError(f"packing must be an increasing range in (0, 1), got {self.packing}")
    if not 0 < self.axis_ratio[0] <= self.axis_ratio[1]:
      raise ValueError(f"axis_ratio must be an increasing positive range, got {self.axis_ratio}")
    return self


@dataclasses.dataclass(frozen=True)
class Priors:
  """Probabilities to draw from: space groups 1–230, elements by Z, and element counts."""
  spacegroup: np.ndarray    # [231], index = space-group number
  element: np.ndarray       # [MAX_Z + 1], index = Z
  num_elements: np.ndarray  # [max_elements + 1], index = count

  @classmethod
  def uniform(cls, max_elements: int) -> "Priors":
    spacegroup = np.zeros(231)
    for first, last in SYSTEM_SPACEGROUPS.values():
      spacegroup[first:last + 1] = 1.0 / (len(SYSTEM_SPACEGROUPS) * (last - first + 1))
    element = _drawable(np.ones(constants.NUM_ELEMENTS + 1))
    num_elements = np.zeros(max_elements + 1)
    num_elements[1:] = 1.0
    return cls(spacegroup, element / element.sum(), num_elements / num_elements.sum())

  @classmethod
  def like(cls, dataset_path: str, max_elements: int) -> "Priors":
    """The train split's histograms of a prepared dataset (its elements heavier than Bi and its
    noble gases left out; element counts above `max_elements` folded into it)."""
    from xxact_jax.data import dataset as dataset_lib   # pylint: disable=g-import-not-at-top
    ds = dataset_lib.open_dataset(dataset_path, split="train")
    batch = ds.read_batch(np.arange(len(ds)), fields=("species", "spacegroup_number"))
    groups = batch["spacegroup_number"][batch["spacegroup_number"] > 0]
    spacegroup = np.bincount(groups, minlength=231)[:231].astype(float)
    species = batch["species"]
    element = _drawable(np.bincount(species[species > 0], minlength=constants.NUM_ELEMENTS + 1))
    counts = np.minimum((species > 0).sum(axis=1), max_elements)
    num_elements = np.bincount(counts[counts > 0], minlength=max_elements + 1).astype(float)
    if not spacegroup.sum() or not element.sum():
      raise ValueError(f"Dataset {dataset_path!r} has no labelled train rows to take priors from.")
    return cls(spacegroup / spacegroup.sum(), element / element.sum(),
               num_elements / num_elements.sum())


def lattice_shape(system: str, rng: np.random.Generator, ratio: tuple):
  """(a, b, c, α, β, γ) of unit a, of the shape `from_spacegroup` accepts for the group."""
  r = lambda: math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
  if system == "cubic":
    return 1.0, 1.0, 1.0, 90.0, 90.0, 90.0
  if system == "tetragonal":
    return 1.0, 1.0, r(), 90.0, 90.0, 90.0
  if system in ("trigonal", "hexagonal"):
    # Rhombohedral groups are generated in their hexagonal setting, like the P groups.
    return 1.0, 1.0, r(), 90.0, 90.0, 120.0
  if system == "orthorhombic":
    return 1.0, r(), r(), 90.0, 90.0, 90.0
  if system == "monoclinic":
    return 1.0, r(), r(), 90.0, rng.uniform(91.0, 120.0), 90.0
  while True:   # triclinic: angles whose cell has a real, non-degenerate volume
    alpha, beta, gamma = rng.uniform(70.0, 110.0, size=3)
    cos = np.cos(np.radians([alpha, beta, gamma]))
    if 1 - (cos ** 2).sum() + 2 * cos.prod() > 0.2:
      return 1.0, r(), r(), float(alpha), float(beta), float(gamma)


@functools.lru_cache(maxsize=None)
def _radius(z: int) -> float:
  from pymatgen.core import Element   # pylint: disable=g-import-not-at-top
  radius = Element.from_Z(z).atomic_radius
  return float(radius) if radius else 1.5


@functools.lru_cache(maxsize=None)
def _operations(spacegroup: int) -> tuple[np.ndarray, np.ndarray]:
  """Rotations [N, 3, 3] and translations [N, 3] of the group's standard setting (hexagonal axes
  for the rhombohedral groups), on fractional coordinates."""
  from pymatgen.symmetry.groups import SpaceGroup   # pylint: disable=g-import-not-at-top
  ops = SpaceGroup.from_int_number(spacegroup).symmetry_ops
  return (np.array([op.rotation_matrix for op in ops]),
          np.array([op.translation_vector for op in ops]))


def orbit(point: np.ndarray, spacegroup: int, grid: int = 10_000) -> np.ndarray:
  """The distinct images in [0, 1)³ of a fractional `point` under the group: [multiplicity, 3]
  (images equal on a 1/`grid` lattice are one site)."""
  rotations, translations = _operations(spacegroup)
  images = (rotations @ point + translations) % 1.0
  keys = np.round(images * grid).astype(np.int64) % grid
  _, first = np.unique(keys[:, 0] * grid * grid + keys[:, 1] * grid + keys[:, 2],
                       return_index=True)
  return images[np.sort(first)]


def _draw_orbit(spacegroup: int, budget: int, rng: np.random.Generator,
                config: SyntheticConfig) -> np.ndarray | None:
  """An orbit of at most `budget` sites. Each coordinate snaps to a special value with
  `config.special_probability`; while the orbit is too large (a general position of a cubic
  group has up to 192 images) one more coordinate snaps, then the special values are drawn
  again."""
  point = rng.random(3)
  snapped = rng.random(3) < config.special_probability
  point[snapped] = rng.choice(SPECIAL_VALUES, size=int(snapped.sum()))
  for _ in range(6):
    sites = orbit(point, spacegroup)
    if len(sites) <= budget:
      return sites
    free = np.flatnonzero(~snapped)
    which = rng.choice(free) if free.size else rng.integers(3)
    point[which], snapped[which] = rng.choice(SPECIAL_VALUES), True
  return None


def random_structure(spacegroup: int, elements: list[int], rng: np.random.Generator,
                     config: SyntheticConfig):
  """One crystal of `spacegroup` holding every element of `elements` (Z), or None when
  `config.attempts` draws all broke a limit."""
  from pymatgen.core import Lattice, Structure   # pylint: disable=g-import-not-at-top
  system = crystal_system_of(spacegroup)
  for _ in range(config.attempts):
    num_orbits = int(rng.integers(len(elements), max(len(elements), config.max_orbits) + 1))
    species = list(elements) + [int(z) for z in rng.choice(elements, num_orbits - len(elements))]
    orbits, budget = [], config.max_sites
    for _ in species:
      # An even share of the sites left, so that the first orbits leave room for the others.
      sites = _draw_orbit(spacegroup, budget // (len(species) - len(orbits)), rng, config)
      if sites is None:
        break
      orbits.append(sites)
      budget -= len(sites)
    if len(orbits) < len(species):
      continue
    site_species = [z for z, sites in zip(species, orbits) for _ in sites]
    lattice = Lattice.from_parameters(*lattice_shape(system, rng, config.axis_ratio))
    structure = Structure(lattice, site_species, np.concatenate(orbits))
    radii = np.array([_radius(z) for z in site_species])
    volume = (4 / 3 * math.pi * (radii ** 3).sum()) / rng.uniform(*config.packing)
    structure.scale_lattice(volume)
    # Nearest pair against the sum of radii, periodic images included (a site's own image
    # counts through the shortest lattice vector).
    frac = structure.frac_coords
    distances = structure.lattice.get_all_distances(frac, frac)
    np.fill_diagonal(distances, np.inf)
    ratio = distances / (radii[:, None] + radii[None, :])
    shortest = min(structure.lattice.abc) / (2 * radii.max())
    closest = min(float(ratio.min()), shortest)
    if closest <= 0:
      continue
    expansion = config.min_distance_factor / closest
    if expansion > config.max_expansion:
      continue
    if expansion > 1:
      structure.scale_lattice(structure.volume * expansion ** 3)
    return structure
  return None


def generate(count: int, seed: int, priors: Priors, config: SyntheticConfig
             ) -> Iterator[tuple[str, object, int]]:
  """`count` (material_id, Structure, drawn space group), the same for the same seed and priors."""
  config.check()
  rng = np.random.default_rng(seed)
  made = 0
  while made < count:
    spacegroup = int(rng.choice(231, p=priors.spacegroup))
    num = int(rng.choice(len(priors.num_elements), p=priors.num_elements))
    elements = [int(z) for z in rng.choice(len(priors.element), size=num, replace=False,
                                           p=priors.element)]
    structure = random_structure(spacegroup, elements, rng, config)
    if structure is None:
      continue
    yield f"synthetic-{seed}-{made}", structure, spacegroup
    made += 1


def timed_write(output: str, count: int, seed: int, priors: Priors, config: SyntheticConfig
                ) -> dict:
  """Writes `count` crystals to `output` (.csv or .csv.gz) with the columns `prepare` reads
  (material_id, cif, the drawn spacegroup for reference); returns the count and the time taken."""
  from pymatgen.io.cif import CifWriter   # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  opener = gzip.open if output.endswith(".gz") else open
  bar = progress_lib.Progress(count, "synthesize", unit="crystals", interval=10.0)
  written = 0
  with opener(output, "wt", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["material_id", "cif", "drawn_spacegroup"])
    for material_id, structure, drawn in generate(count, seed, priors, config):
      writer.writerow([material_id, str(CifWriter(structure)), drawn])
      written += 1
      bar.update(written)
  seconds = time.monotonic() - start
  return {"output": output, "crystals": written, "seconds": round(seconds, 1),
          "crystals_per_s": round(written / max(seconds, 1e-9), 1)}
