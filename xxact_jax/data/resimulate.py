"""XRD patterns simulated again from the stored structures inside the train step (jit, float32).

With `config.data.xrd_source = "simulated"` the train step does not read the stored pattern of a
row whose structure is stored (prepare --store_structures): it computes it from the lattice, the
sites and the stored reflection list, after sample effects that act on each reflection on its
own, which a dense pattern cannot express:

| effect | parameter (config `augment.structure.*`) | range | physics |
|---|---|---|---|
| lattice strain that keeps the point group (anisotropic thermal expansion, the DFT error of each lattice parameter) | `strain` | N(0, 1 %) per Cartesian entry, averaged over the point group | G → G + mean_W Wᵀ (G_ε − G) W on the metric G = L Lᵀ; peaks move by Bragg's law per (hkl) |
| preferred orientation (March–Dollase) along a low-index direction | `texture_prob`, `march_r` | r ∈ [0.6, 1.4], log-uniform | I × (r² cos² α + sin² α / r)^(−3/2) |
| atomic displacement (overall Debye–Waller factor) | `b_factor` | B ∈ [0, 2] Å² | I × exp(−2 B s²), s = sin θ / λ |
| anisotropic crystallite size (plates and needles), Scherrer width per reflection | `size_prob`, `crystallite_nm` | L along / across the texture axis ∈ [20, 500] nm each | FWHM = K λ / (L(hkl) cos θ), L(hkl) = L⊥ + (L∥ − L⊥) cos² α; area kept |
| another anode: Lorentz-polarisation at its wavelength, its 5–90° scan range on the Cu grid | `anode_prob`, `anodes_angstrom` | Cr, Fe, Co, Mo Kα | LP(θ_λ) with sin θ_λ = λ |g| / 2; outside the range marked unmeasured |

With every effect neutral the pattern is the stored one (pymatgen XRDCalculator, Cu Kα, σ = 0.1°)
to float32 precision: the structure factor (pymatgen's form factors, occupancy-weighted site sum),
Lorentz-polarisation, then Gaussian smearing on the 4,250-point grid, max 100. pymatgen's relative
cut-off of merged peaks below 1e-3 of the strongest is not applied (a change below 1e-3 of the
scale). Rows without a stored structure keep their stored pattern.

Cost per pattern: reflections × sites phases (2,048 × 64 at the default padding) and reflections
× the smearing window; benchmarks/train_step.py --xrd_source=simulated measures it.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax import constants
from xxact_jax import physics

FWHM_TO_SIGMA = 1 / (2 * math.sqrt(2 * math.log(2)))
CU_KA = constants.CU_KA_LINES[0]
# pymatgen's Kα wavelengths (Å, weighted Kα1/Kα2) of the anodes other than Cu.
ANODES = {"Cr": 2.29100, "Fe": 1.93735, "Co": 1.79026, "Mo": 0.71073}
TEXTURE_DIRECTIONS = ((0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))


def default_config() -> ml_collections.ConfigDict:
  """The per-reflection effects of the module docstring (used when augmentation is on)."""
  c = ml_collections.ConfigDict()
  c.apply_prob = 0.8           # per pattern; the rest are simulated ideal
  c.strain = 0.01
  c.texture_prob = 0.5
  c.march_r = (0.6, 1.4)
  c.b_factor = (0.0, 2.0)
  c.size_prob = 0.3
  c.crystallite_nm = (20.0, 500.0)
  c.anode_prob = 0.2
  c.anodes_angstrom = tuple(ANODES.values())
  # Widest Gaussian σ (degrees) a reflection may get; sets the smearing window (±6σ).
  c.max_sigma_deg = 0.25
  return c


@dataclasses.dataclass
class Effects:
  """Per-pattern effect parameters, [B, ...] arrays; `neutral(b)` changes nothing."""
  strain: jax.Array          # [B, 3, 3] symmetric Cartesian strain
  texture_hkl: jax.Array     # [B, 3] preferred direction in reciprocal-lattice coordinates
  march_r: jax.Array         # [B] (1: no texture)
  b_factor: jax.Array        # [B] Å²
  size_axis_nm: jax.Array    # [B] crystallite size along the texture axis (inf: no broadening)
  size_lateral_nm: jax.Array  # [B] across it
  wavelength: jax.Array      # [B] Å of the anode

  @classmethod
  def neutral(cls, b: int) -> "Effects":
    inf = jnp.full((b,), jnp.inf, jnp.float32)
    return cls(jnp.zeros((b, 3, 3), jnp.float32), jnp.zeros((b, 3), jnp.float32),
               jnp.ones((b,), jnp.float32), jnp.zeros((b,), jnp.float32), inf, inf,
               jnp.full((b,), CU_KA, jnp.float32))


jax.tree_util.register_dataclass(Effects, data_fields=[f.name for f in dataclasses.fields(Effects)],
                                 meta_fields=[])


def _log_uniform(key, shape, bounds):
  lo, hi = bounds
  return jnp.exp(jax.random.uniform(key, shape, jnp.float32, math.log(lo), math.log(hi)))


def random_effects(key: jax.Array, b: int, config: ml_collections.ConfigDict) -> Effects:
  """Effects drawn per pattern from `config` (default_config's fields); a fraction
  1 − apply_prob of the patterns, and each effect outside its own probability, stay neutral."""
  keys = iter(jax.random.split(key, 16))
  applied = jax.random.bernoulli(next(keys), config.apply_prob, (b,))

  def on(p):
    return applied & jax.random.bernoulli(next(keys), p, (b,))

  x = config.strain * jax.random.normal(next(keys), (b, 3, 3), jnp.float32)
  strain = jnp.where(applied[:, None, None], (x + jnp.swapaxes(x, 1, 2)) / 2, 0.0)
  directions = jnp.asarray(TEXTURE_DIRECTIONS, jnp.float32)
  texture_hkl = directions[jax.random.randint(next(keys), (b,), 0, len(directions))]
  march_r = jnp.where(on(config.texture_prob), _log_uniform(next(keys), (b,), config.march_r),
                      1.0)
  b_factor = jnp.where(applied, jax.random.uniform(next(keys), (b,), jnp.float32,
                                                   *config.b_factor), 0.0)
  sized = on(config.size_prob)
  size_axis = jnp.where(sized, _log_uniform(next(keys), (b,), config.crystallite_nm), jnp.inf)
  size_lateral = jnp.where(sized, _log_uniform(next(keys), (b,), config.crystallite_nm), jnp.inf)
  anodes = jnp.asarray(config.anodes_angstrom, jnp.float32)
  anode = anodes[jax.random.randint(next(keys), (b,), 0, len(anodes))]
  wavelength = jnp.where(on(config.anode_prob), anode, CU_KA)
  return Effects(strain, texture_hkl, march_r, b_factor, size_axis, size_lateral, wavelength)


def reciprocal_metric(lattice, rotations, strain):
  """G* = inverse of the strained metric [B, 3, 3].

  The strain changes the metric G = L Lᵀ to L (I + ε)(I + ε)ᵀ Lᵀ; the change is averaged over the
  point-group rotations W (lattice basis, Wᵀ G W = G), so the strained cell keeps the symmetry
  (a cubic cell only grows or shrinks). The unstrained metric is kept exactly.
  """
  g = lattice @ jnp.swapaxes(lattice, 1, 2)
  deformed = lattice @ (jnp.eye(3) + strain)
  change = deformed @ jnp.swapaxes(deformed, 1, 2) - g
  w = rotations.astype(jnp.float32)                                     # [B, n, 3, 3]
  present = jnp.any(rotations != 0, axis=(2, 3)).astype(jnp.float32)  # [B, n]
  averaged = jnp.einsum("bnji,bjk,bnkl->bil", w, change, w * present[..., None, None])
  count = jnp.sum(present, axis=1)[:, None, None]
  # No stored rotations (P1 or a row without a structure): the change as drawn.
  change = jnp.where(count > 0, averaged / jnp.maximum(count, 1.0), change)
  return jnp.linalg.inv(g + change)


def structure_factors(hkl, s2, frac_coords, atomic_numbers, occupancies, species, coefficients):
  """|F|² [B, R]: pymatgen's form factors of the composition's elements, the occupancy-weighted
  phase sums of their sites.

  hkl f32[B, R, 3]; s2 = (sin θ / λ)² f32[B, R]; frac_coords f32[B, S, 3]; atomic_numbers,
  occupancies [B, S]; species i32[B, E] (the composition's atomic numbers, 0 = padding);
  coefficients f32[Z + 1, 4, 2].
  """
  weights = (occupancies[..., None]
             * ((atomic_numbers[..., None] == species[:, None, :]) & (species[:, None, :] > 0)))
  return physics.structure_factor(species.astype(jnp.float32), coefficients[species], s2,
                                  jnp.einsum("brk,bsk->brs", hkl, frac_coords), weights)


# Reflection-site pairs per structure-factor pass. On a CPU the [rows, R, S] phase temporaries
# must stay in cache (as in xrd_engine/device.py); on an accelerator this only bounds memory.
_PAIRS_PER_CHUNK = {"cpu": 2 ** 20, "other": 2 ** 24}


def _chunked(fn, budget: int, *arrays):
  """fn over consecutive row chunks (a power of two dividing B, rows × R × S ≤ budget)."""
  b, r, s = arrays[0].shape[0], arrays[0].shape[1], arrays[2].shape[1]
  rows = b
  while rows > 1 and (rows * r * s > budget or b % rows):
    rows //= 2
  if rows >= b or b % rows:
    return fn(*arrays)
  chunks = tuple(x.reshape((b // rows, rows) + x.shape[1:]) for x in arrays)
  return jax.lax.map(lambda xs: fn(*xs), chunks).reshape(b, r)


def _smear(two_theta, height, sigma, max_sigma: float):
  """Σ_i height_i exp(−(x − 2θ_i)² / 2σ_i²) on the grid, each within ±6 max_sigma of its
  nearest grid point: [B, 4250]."""
  step, start = constants.TWO_THETA_STEP, constants.TWO_THETA_MIN
  half = int(math.ceil(6 * max_sigma / step))
  width = 2 * half + 1
  b = two_theta.shape[0]
  centre = jnp.rint((two_theta - start) / step)
  delta = start + step * centre - two_theta                              # [B, R]
  offsets = step * jnp.arange(-half, half + 1, dtype=jnp.float32)
  gauss = jnp.exp(-0.5 * ((delta[..., None] + offsets) / sigma[..., None]) ** 2)
  contributions = height[..., None] * gauss                              # [B, R, width]
  padded = constants.NUM_XRD_POINTS + width
  position = (jnp.arange(b)[:, None] * padded
              + jnp.clip(centre.astype(jnp.int32), 0, constants.NUM_XRD_POINTS))
  dims = jax.lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(),
                                         scatter_dims_to_operand_dims=(0,))
  grid = jax.lax.scatter_add(jnp.zeros(b * padded, jnp.float32), position.reshape(-1, 1),
                             contributions.reshape(-1, width), dims)
  return grid.reshape(b, padded)[:, half:half + constants.NUM_XRD_POINTS]


def simulate(batch: dict, coefficients: jax.Array, effects: Effects | None = None, *,
             sigma: float = constants.XRD_SIGMA, max_sigma: float = 0.25) -> jax.Array:
  """Patterns float32[B, 4250] (max 100) of the batch's stored structures after `effects`
  (None: neutral); rows without a stored structure, or with nothing on the grid, get their
  stored `xrd`. Points outside an anode's scan range hold constants.UNMEASURED_INTENSITY.

  batch: the loader's structure fields (schema.STRUCTURE_BATCH_DTYPES), `species` and `xrd`;
  coefficients: f32[NUM_ELEMENTS + 1, 4, 2] (structures.coefficient_table).
  """
  b = batch["xrd"].shape[0]
  effects = Effects.neutral(b) if effects is None else effects
  hkl = batch["hkl"].astype(jnp.float32)
  num_rows = hkl.shape[1]
  g_star = reciprocal_metric(batch["lattice"].astype(jnp.float32), batch["rotations"],
                             effects.strain)
  g2 = jnp.einsum("bri,bij,brj->br", hkl, g_star, hkl)
  valid = jnp.arange(num_rows)[None, :] < batch["num_reflections"][:, None]
  g = jnp.sqrt(jnp.maximum(g2, 0.0))
  sin_cu = physics.bragg_sin_theta(g, CU_KA)
  two_theta = physics.two_theta(sin_cu)
  sin_anode = physics.bragg_sin_theta(g, effects.wavelength[:, None])
  on_grid = (valid & (sin_cu < 1) & (sin_anode < 1) & (two_theta >= constants.TWO_THETA_MIN)
             & (two_theta <= constants.TWO_THETA_MAX))
  sin_anode = jnp.where(on_grid, sin_anode, 0.5)

  budget = _PAIRS_PER_CHUNK["cpu" if jax.default_backend() == "cpu" else "other"]
  f2 = _chunked(lambda *xs: structure_factors(*xs, coefficients), budget,
                hkl, g2 / 4, batch["frac_coords"].astype(jnp.float32), batch["atomic_numbers"],
                batch["occupancies"].astype(jnp.float32), batch["species"])
  # Angle α between each reflection and the texture axis (reciprocal metric), for the March–
  # Dollase factor and the crystallite-size anisotropy.
  axis = effects.texture_hkl
  axis2 = jnp.einsum("bi,bij,bj->b", axis, g_star, axis)[:, None]
  textured = (axis2 > 0) & (g2 > 0)
  cos2 = jnp.where(textured, jnp.einsum("bri,bij,bj->br", hkl, g_star, axis) ** 2
                   / jnp.where(textured, g2 * axis2, 1.0), 1.0)
  r = effects.march_r[:, None]
  march = (r * r * cos2 + (1 - cos2) / r) ** -1.5
  debye_waller = jnp.exp(-effects.b_factor[:, None] * g2 / 2)
  intensity = jnp.where(on_grid, f2 * physics.lorentz_polarisation(sin_anode) * march * debye_waller,
                        0.0)

  # Scherrer width per reflection, on the Cu grid (a width in d does not depend on λ).
  size = (effects.size_lateral_nm[:, None]
          + (effects.size_axis_nm[:, None] - effects.size_lateral_nm[:, None]) * cos2)
  size = jnp.where(jnp.isnan(size), jnp.inf, size)      # inf − inf where there is no broadening
  cos_theta = jnp.sqrt(jnp.maximum(1 - sin_cu * sin_cu, 1e-6))
  fwhm = physics.scherrer_fwhm(cos_theta, size, CU_KA / 10)
  width = jnp.clip(jnp.sqrt(sigma ** 2 + (fwhm * FWHM_TO_SIGMA) ** 2), sigma, max_sigma)
  pattern = _smear(jnp.where(on_grid, two_theta, constants.TWO_THETA_MIN),
                   intensity * (sigma / width), width, max(max_sigma, sigma))
  peak = jnp.max(pattern, axis=1, keepdims=True)
  ok = batch["has_structure"][:, None] & (peak > 0) & jnp.all(jnp.isfinite(pattern), axis=1,
                                                              keepdims=True)
  pattern = constants.XRD_MAX_INTENSITY * pattern / jnp.where(peak > 0, peak, 1.0)
  pattern = jnp.where(ok, pattern, batch["xrd"].astype(jnp.float32))

  # The anode's 5–90° scan seen on the Cu grid.
  ratio = CU_KA / effects.wavelength[:, None]
  low, high = (physics.rescale_two_theta(t, ratio, unreachable=None)
               for t in (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX))
  grid = jnp.asarray(constants.two_theta_grid(), jnp.float32)[None, :]
  measured = (grid >= low) & (grid <= high)
  return jnp.where(ok & ~measured, constants.UNMEASURED_INTENSITY, pattern)
