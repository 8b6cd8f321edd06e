"""Sample effects a dense pattern cannot express, applied per structure before simulation.

The stored patterns are those of an ideal powder of the relaxed (PBE) cell. A real sample differs
per reflection, in ways only the reflection list can carry:

| effect | parameter | physics |
|---|---|---|
| lattice strain compatible with the symmetry (anisotropic thermal expansion, the DFT error of each lattice parameter) | `strain` [B, 3, 3] | lattice rows L → L (I + ε); `symmetric_strain` averages a random ε over the point group, so a cubic cell stays cubic and a tetragonal one tetragonal |
| preferred orientation (March–Dollase) | `texture_hkl` [B, 3], `march_r` [B] | I(hkl) × (r² cos² α + sin² α / r)^(-3/2), α between g(hkl) and the preferred direction g(texture_hkl); r < 1 plates, r > 1 needles |
| atomic displacement (overall Debye–Waller factor) | `b_factor` [B] (Å²) | I × exp(−2 B s²), s = sin θ / λ = |g| / 2; the stored patterns have B = 0 |

Neutral values (ε = 0, texture_hkl = 0 or r = 1, B = 0) leave the pattern as pymatgen computes it.
"""

import dataclasses

import numpy as np

# Ranges for random effects, from the literature on laboratory powder samples.
# Room-temperature lattice parameters differ from PBE ones by up to ~2 % each (PBE over-binds
# little and under-binds layered and hydrous phases most), thermal expansion adds ~1 %.
STRAIN_SCALE = 0.01
# March–Dollase r of packed lab powders: 0.6–1.0 for plates, up to ~1.4 for needles.
MARCH_R_RANGE = (0.6, 1.4)
# Overall B of inorganic solids at room temperature: ~0.3–2 Å².
B_FACTOR_RANGE = (0.0, 2.0)
# Preferred-orientation directions drawn: the low-index zone axes plates and needles grow along.
TEXTURE_DIRECTIONS = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 1], [0, 1, 1],
                               [1, 1, 1]], np.float64)


@dataclasses.dataclass(frozen=True)
class SampleEffects:
  """Per-structure effects; any field left None is neutral for every structure."""
  strain: np.ndarray | None = None        # float[B, 3, 3], symmetric
  texture_hkl: np.ndarray | None = None   # float[B, 3] in reciprocal-lattice (hkl) coordinates
  march_r: np.ndarray | None = None       # float[B] > 0
  b_factor: np.ndarray | None = None      # float[B] ≥ 0, Å²

  def check(self, count: int) -> None:
    """ValueError naming the field whose shape or values are wrong for `count` structures."""
    shapes = dict(strain=(count, 3, 3), texture_hkl=(count, 3), march_r=(count,),
                  b_factor=(count,))
    for name, shape in shapes.items():
      value = getattr(self, name)
      if value is None:
        continue
      value = np.asarray(value, np.float64)
      if value.shape != shape:
        raise ValueError(f"SampleEffects.{name} must have shape {shape}, not {value.shape}")
      if not np.isfinite(value).all():
        raise ValueError(f"SampleEffects.{name} has non-finite values")
    if self.march_r is not None and not (np.asarray(self.march_r) > 0).all():
      raise ValueError("SampleEffects.march_r must be > 0")
    if self.b_factor is not None and (np.asarray(self.b_factor) < 0).any():
      raise ValueError("SampleEffects.b_factor must be ≥ 0")

  def strained(self, lattices: np.ndarray, indices=None) -> np.ndarray:
    """Lattices [n, 3, 3] (rows = vectors) after the strain of structures `indices` (default:
    all, in order)."""
    if self.strain is None:
      return lattices
    strain = np.asarray(self.strain, np.float64)
    return lattices @ (np.eye(3) + (strain if indices is None else strain[list(indices)]))

  def per_structure(self, i: int) -> dict:
    """Planned's texture_hkl, march_r and b_factor for structure i (neutral where None)."""
    return dict(
        texture_hkl=(np.zeros(3) if self.texture_hkl is None
                     else np.asarray(self.texture_hkl[i], np.float64)),
        march_r=1.0 if self.march_r is None else float(self.march_r[i]),
        b_factor=0.0 if self.b_factor is None else float(self.b_factor[i]))


def symmetric_strain(rotations, scale: float, rng: np.random.Generator) -> np.ndarray:
  """A random strain [3, 3] that keeps the point group: ε = mean_R R X Rᵀ, X symmetric with
  N(0, scale²) entries. rotations: the Cartesian rotation matrices of the structure's symmetry
  operations (pymatgen SpacegroupAnalyzer.get_symmetry_operations(cartesian=True))."""
  x = rng.normal(scale=scale, size=(3, 3))
  x = (x + x.T) / 2
  rotations = np.asarray(rotations, np.float64).reshape(-1, 3, 3)
  if not len(rotations):
    return x
  return np.einsum("rij,jk,rlk->il", rotations, x, rotations) / len(rotations)


def random_effects(rotations: list, rng: np.random.Generator, *, strain_scale=STRAIN_SCALE,
                   march_r_range=MARCH_R_RANGE, b_factor_range=B_FACTOR_RANGE) -> SampleEffects:
  """Random effects for len(rotations) structures: symmetric strain, a preferred orientation along
  a low-index direction with log-uniform r, a uniform B."""
  count = len(rotations)
  strain = np.stack([symmetric_strain(r, strain_scale, rng) for r in rotations]) if count else (
      np.zeros((0, 3, 3)))
  texture = TEXTURE_DIRECTIONS[rng.integers(0, len(TEXTURE_DIRECTIONS), count)]
  march_r = np.exp(rng.uniform(np.log(march_r_range[0]), np.log(march_r_range[1]), count))
  b_factor = rng.uniform(b_factor_range[0], b_factor_range[1], count)
  return SampleEffects(strain=strain, texture_hkl=texture, march_r=march_r, b_factor=b_factor)
