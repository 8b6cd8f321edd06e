"""Powder indexing: is a scan's peak list that of a cubic, tetragonal, hexagonal (hexagonal or
trigonal, rhombohedral included) or orthorhombic lattice?

A crystallographer's first step with an unknown powder pattern is to index it: find the smallest
lattice whose reflections account for the observed lines. For the lattices with one to three
parameters this is a small search, and a good fit is strong evidence of the metric. Reflection
positions follow Q = 1/d² = 4 sin²θ / λ²:

  cubic         Q = A (h² + k² + l²)                        A = 1/a²
  tetragonal    Q = A (h² + k²) + C l²                      A = 1/a², C = 1/c²
  hexagonal     Q = A (h² + hk + k²) + C l²                 A = 4/(3a²), C = 1/c²
  orthorhombic  Q = A h² + B k² + C l²                      A = 1/a², B = 1/b², C = 1/c²

with the centring's conditions (cubic P, I, F; tetragonal P, I; hexagonal P and rhombohedral R
in hexagonal axes, −h + k + l = 3n; orthorhombic P, A, B, C, I, F). Candidate parameters come
from the first lines taken as low-index reflections; each candidate is scored by how many of the
first `max_lines` lines it indexes within the tolerance and by de Wolff's figure of merit

  M_N = Q_N / (2 ⟨|ΔQ|⟩ N_calc),

where Q_N is the N-th observed line, ⟨|ΔQ|⟩ the mean misfit of the indexed lines and N_calc the
number of reflections (distinct index triples) the lattice allows up to Q_N; a large cell indexes
anything but allows many reflections, and M_N says so (de Wolff, J. Appl. Cryst. 1, 108 (1968)).
The best candidates are refined by least squares, with a zero-point shift of 2θ. As in the
dichotomy and trial-and-error programs (DICVOL, TREOR), the lattices are tried from high
symmetry down: an orthorhombic lattice indexes the lines of every lattice above it, so it is
considered only when none of those does. Monoclinic and triclinic lattices are not searched.

A lattice found this way fixes the metric, not the symmetry: a crystal of lower symmetry whose
cell happens to be metrically tetragonal, or whose strong lines come from a pseudo-cubic subcell,
indexes too. `Indexing.crystal_systems` therefore names the systems the lattice allows (hexagonal
axes hold both the hexagonal and the trigonal systems, a rhombohedral lattice only the trigonal),
and a caller restricts a model's answer to them rather than replacing it.
"""

import dataclasses
import functools
import itertools

import numpy as np

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.inference import peaks as peaks_lib

# The model grid's angles are for Cu Kα (the weighted Kα1/Kα2 mean, as the training patterns).
GRID_WAVELENGTH = constants.CU_KA_LINES[0]
# A line is indexed when a reflection lies within this many degrees of 2θ of it, after the
# zero-point refinement: lab scans place a peak to a few hundredths of a degree.
TOLERANCE_DEG = 0.04
MAX_ZERO_SHIFT_DEG = 0.15
# At most this many of the first max_lines lines, and at most a fifth of them, may stay
# unindexed (impurities, Kβ lines, noise), and none of those at least a quarter as strong as the
# strongest line.
MAX_UNINDEXED = 2
MIN_INDEXED_FRACTION = 0.8
STRONG_LINE = 0.25
MIN_LINES = 6
# A lattice of two parameters and a zero shift fits a handful of lines by chance: it needs more.
# A cubic one with fewer lines needs twice the figure of merit (M_N is meant for N ≈ 20).
MIN_LINES_TWO_PARAMETERS = 10
# Accepted figure of merit: M_N of at least this. Chosen on simulated patterns of the mp_36k
# training split (experiments/indexing_check.py): at 20, 93 % of the patterns indexed are of a
# system the lattice allows, against 81 % at 10.
MIN_FIGURE_OF_MERIT = 20.0
# Cells searched (Å): the reflections of a larger cell crowd too densely to be told apart.
MAX_CELL_EDGE = 25.0

FAMILIES = ("cubic", "tetragonal", "hexagonal")
# Crystal systems (names in constants.CRYSTAL_SYSTEMS) a lattice family allows: hexagonal axes
# hold the hexagonal and the trigonal systems, but a rhombohedral (R) lattice only the trigonal.
# An orthorhombic lattice is tried only when none of the others indexes the lines, so it stands
# for the orthorhombic system alone.
SYSTEMS = {"cubic": ("cubic",), "tetragonal": ("tetragonal",),
           "hexagonal": ("trigonal", "hexagonal"), "orthorhombic": ("orthorhombic",)}
RHOMBOHEDRAL_SYSTEMS = ("trigonal",)


@dataclasses.dataclass(frozen=True)
class Indexing:
  """A lattice that indexes a scan's lines."""
  family: str                # one of FAMILIES
  centring: str              # P, I, F (cubic), R (hexagonal axes)
  a: float                   # Å
  c: float                   # Å (a for cubic)
  zero_shift: float          # degrees of 2θ, subtracted from the observed angles
  figure_of_merit: float     # de Wolff M_N
  lines: int                 # observed lines considered (N)
  indexed: int               # of those, indexed within the tolerance
  b: float | None = None     # Å, orthorhombic lattices only (a for the others)

  @property
  def crystal_systems(self) -> tuple[int, ...]:
    """Indices into constants.CRYSTAL_SYSTEMS of the systems this lattice allows."""
    systems = RHOMBOHEDRAL_SYSTEMS if self.centring == "R" else SYSTEMS[self.family]
    return tuple(constants.CRYSTAL_SYSTEMS.index(s) for s in systems)


# ---------------------------------------------------------------------------------------------
# Reflection tables. Q = A m + C n with n = l²; for each l, the sorted m values the centring
# allows (a cubic lattice has one group, n = 0, m = h² + k² + l²).

MAX_M = 800
MAX_L = 24


@functools.lru_cache(maxsize=None)
def _groups(family: str, centring: str) -> tuple[tuple[float, np.ndarray], ...]:
  """((n, sorted allowed m), ...) over l = 0..MAX_L."""
  r = np.arange(0, int(np.sqrt(MAX_M)) + 2)
  if family == "cubic":
    h, k, l = np.meshgrid(r, r, r, indexing="ij")
    if centring == "I":
      allowed = (h + k + l) % 2 == 0
    elif centring == "F":
      allowed = ((h % 2) == (k % 2)) & ((k % 2) == (l % 2))
    else:
      allowed = np.ones(h.shape, bool)
    m = (h * h + k * k + l * l)[allowed]
    return ((0.0, np.unique(m[(m > 0) & (m <= MAX_M)]).astype(np.float64)),)
  r = np.arange(-int(np.sqrt(MAX_M)) - 2, int(np.sqrt(MAX_M)) + 3)
  h, k = np.meshgrid(r, r, indexing="ij")
  m = (h * h + k * k) if family == "tetragonal" else (h * h + h * k + k * k)
  m = np.unique(m[m <= MAX_M])                       # includes 0
  groups = []
  for l in range(MAX_L + 1):
    if centring == "I":                              # h + k + l even; h² + k² ≡ h + k (mod 2)
      ok = m % 2 == l % 2
    elif centring == "R":                            # −h + k + l ≡ 0 (mod 3), hexagonal axes;
      ok = (m % 3 == 0) == (l % 3 == 0)              # h² + hk + k² ≡ (k − h)² (mod 3)
    else:
      ok = np.ones(m.shape, bool)
    if l == 0:
      ok = ok & (m > 0)
    groups.append((float(l * l), m[ok].astype(np.float64)))
  return tuple(groups)


CENTRINGS = {"cubic": ("P", "I", "F"), "tetragonal": ("P", "I"), "hexagonal": ("P", "R")}


# ---------------------------------------------------------------------------------------------
# Lines of a scan.

def q_of(two_theta_deg, wavelength: float = GRID_WAVELENGTH) -> np.ndarray:
  s = physics.sin_theta(np.asarray(two_theta_deg, np.float64))
  return 4 * s * s / wavelength**2


def two_theta_of(q, wavelength: float = GRID_WAVELENGTH) -> np.ndarray:
  g = np.sqrt(np.clip(np.asarray(q, np.float64), 0, None))
  return physics.two_theta(physics.bragg_sin_theta(g, wavelength))


def dq_dtwo_theta(two_theta_deg, wavelength: float = GRID_WAVELENGTH) -> np.ndarray:
  """dQ / d(2θ) per degree."""
  return 2 / wavelength**2 * np.sin(np.radians(two_theta_deg)) * np.pi / 180


# ---------------------------------------------------------------------------------------------
# The search.

def _score(q_obs, groups, a_param, c_param):
  """For K candidate (A, C): per line, the misfit to the nearest allowed reflection [K, L] and
  its (m, n) [K, L, 2]; N_calc, the number of allowed reflections up to the last line [K]."""
  k_count, l_count = a_param.size, q_obs.size
  best = np.full((k_count, l_count), np.inf)
  best_mn = np.zeros((k_count, l_count, 2))
  n_calc = np.zeros(k_count, np.int64)
  q_max = q_obs[-1]
  a_col = a_param[:, None]
  for n, m_values in groups:
    rest = q_obs[None, :] - c_param[:, None] * n                   # [K, L]
    reachable = c_param * n <= q_max
    if not reachable.any():
      continue
    target = rest / a_col
    j = np.searchsorted(m_values, target)
    for neighbour in (np.clip(j - 1, 0, m_values.size - 1), np.clip(j, 0, m_values.size - 1)):
      m = m_values[neighbour]
      dq = np.abs(rest - a_col * m)
      better = (dq < best) & reachable[:, None]
      best = np.where(better, dq, best)
      best_mn[..., 0] = np.where(better, m, best_mn[..., 0])
      best_mn[..., 1] = np.where(better, n, best_mn[..., 1])
    limit = (q_max - c_param * n) / a_param
    n_calc += np.where(reachable, np.searchsorted(m_values, limit, side="right"), 0)
  return best, best_mn, n_calc


def _figure_of_merit(q_obs, tol_q, dq, n_calc, strong):
  """de Wolff's M_N per candidate, 0 where too many or any strong line stay unindexed; and
  the number of lines indexed."""
  indexed = dq <= tol_q[None]
  n = indexed.sum(1)
  # Misfits below a fifth of the tolerance (0.008°) are not resolved by a lab scan: they count as that.
  mean_dq = np.where(indexed, np.maximum(dq, 0.2 * tol_q[None]), 0).sum(1) / np.maximum(n, 1)
  fom = q_obs[-1] / (2 * np.maximum(mean_dq, 1e-30) * np.maximum(n_calc, 1))
  unindexed = q_obs.size - n
  ok = ((unindexed <= MAX_UNINDEXED) & (n >= MIN_INDEXED_FRACTION * q_obs.size)
        & ~np.any(~indexed & strong[None], axis=1))
  return np.where(ok, fom, 0.0), n


# Low-index (m, l) two of the first lines are taken to be, to solve for a trial (A, C).
_LOW_M = {"tetragonal": (0, 1, 2, 4, 5), "hexagonal": (0, 1, 3, 4, 7)}
_LOW_L = {"tetragonal": 4, "hexagonal": 6}
_TRIAL_LINES = 7


def _candidates(family, q_obs):
  """Trial (A, C): for a cubic lattice, one of the first lines taken as h² + k² + l² = 1..40;
  otherwise every pair of the first lines taken as two low-index reflections (m, l), the two
  equations Q = A m + C l² solved for A and C."""
  if family == "cubic":
    n_values = np.arange(1, 41, dtype=np.float64)
    a_param = (q_obs[:4, None] / n_values[None]).ravel()
    return a_param, np.zeros_like(a_param)
  m, l = np.meshgrid(np.array(_LOW_M[family], np.float64),
                     np.arange(_LOW_L[family] + 1, dtype=np.float64), indexing="ij")
  m, n = m.ravel(), (l * l).ravel()
  keep = (m > 0) | (n > 0)
  m, n = m[keep], n[keep]
  first = q_obs[:_TRIAL_LINES]
  i, j = np.triu_indices(first.size, 1)
  qi, qj = first[i][:, None, None], first[j][:, None, None]
  m1, n1 = m[None, :, None], n[None, :, None]
  m2, n2 = m[None, None, :], n[None, None, :]
  det = m1 * n2 - m2 * n1
  with np.errstate(divide="ignore", invalid="ignore"):
    a_param = (qi * n2 - qj * n1) / det
    c_param = (m1 * qj - m2 * qi) / det
  keep = (det != 0) & (a_param > 0) & (c_param > 0)
  a_param, c_param = a_param[keep], c_param[keep]
  scale = 4 / 3 if family == "hexagonal" else 1.0
  keep = ((np.sqrt(scale / a_param) <= MAX_CELL_EDGE) & (1 / np.sqrt(c_param) <= MAX_CELL_EDGE))
  # Trials within a part in 10⁴ of each other are one.
  pairs = np.unique(np.round(np.log(np.stack([a_param[keep], c_param[keep]], 1)) * 1e4), axis=0)
  return np.exp(pairs[:, 0] / 1e4), np.exp(pairs[:, 1] / 1e4)


def _refine(two_theta, mn, indexed, wavelength, zero):
  """Least-squares (A, C, zero shift) from the indexed lines' (m, n); None if underdetermined."""
  corrected = two_theta - zero
  q = q_of(corrected, wavelength)
  slope = dq_dtwo_theta(corrected, wavelength)
  mn = mn[indexed]
  cubic = np.all(mn[:, 1] == 0)
  design = np.column_stack([mn[:, :1] if cubic else mn, slope[indexed]])
  if design.shape[0] <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
    return None
  solution, *_ = np.linalg.lstsq(design, q[indexed], rcond=None)
  a_param, c_param = solution[0], (0.0 if cubic else solution[1])
  # Q(2θ_obs − Z) ≈ Q(corrected) − slope·(Z − zero): the last coefficient is Z − zero.
  return np.array([a_param, c_param]), zero + solution[-1]


def _refined_trials(two_theta, strong, wavelength, trials, score, refine, valid):
  """(parameters, zero shift, the lines' Q corrected for it) of each of the eight best trials
  that refine to valid parameters. `trials` [K, P]; score(q, parameters [K, P]) gives per line
  the misfit [K, L], the index terms of the nearest reflection [K, L, ·] and N_calc [K];
  refine(2θ, index terms, indexed, wavelength, zero) gives (parameters [P], zero) or None."""
  q_obs = q_of(two_theta, wavelength)
  slope = dq_dtwo_theta(two_theta, wavelength)
  # Trial values carry the zero error of the lines they came from: a tolerance wide enough for
  # the largest zero shift first, then refinement with the zero shift, then the real tolerance.
  wide = slope * (TOLERANCE_DEG + MAX_ZERO_SHIFT_DEG)
  tolerance = slope * TOLERANCE_DEG
  dq, terms, n_calc = score(q_obs, trials)
  fom, _ = _figure_of_merit(q_obs, wide, dq, n_calc, strong)
  for k in np.argsort(-fom)[:8]:
    if fom[k] <= 0:
      break
    zero, rows, indexed, refined = 0.0, terms[k], dq[k] <= wide, None
    for _ in range(3):
      refined = refine(two_theta, rows, indexed, wavelength, zero)
      if refined is None:
        break
      params, zero = refined
      if not (valid(params) and abs(zero) <= MAX_ZERO_SHIFT_DEG):
        refined = None
        break
      q_corr = q_of(two_theta - zero, wavelength)
      dq1, rows1, _ = score(q_corr, params[None])
      rows, indexed = rows1[0], dq1[0] <= tolerance
    if refined is not None:
      yield params, zero, q_corr


def _search(family, centring, two_theta, strong, wavelength) -> Indexing | None:
  groups = _groups(family, centring)
  a_param, c_param = _candidates(family, q_of(two_theta, wavelength))
  if a_param.size == 0:
    return None

  def score(q, params):
    return _score(q, groups, params[:, 0], params[:, 1])

  tolerance = dq_dtwo_theta(two_theta, wavelength) * TOLERANCE_DEG
  result = None
  for (a1, c1), zero, q_corr in _refined_trials(
      two_theta, strong, wavelength, np.stack([a_param, c_param], 1), score, _refine,
      lambda p: p[0] > 0 and p[1] >= 0):
    dq1, _, n1 = score(q_corr, np.array([[a1, c1]]))
    fom1, count = _figure_of_merit(q_corr, tolerance, dq1, n1, strong)
    if fom1[0] > 0 and (result is None or fom1[0] > result.figure_of_merit):
      scale = 4 / 3 if family == "hexagonal" else 1.0
      result = Indexing(family=family, centring=centring, a=float(np.sqrt(scale / a1)),
                        c=float(1 / np.sqrt(c1)) if c1 > 0 else float(np.sqrt(1 / a1)),
                        zero_shift=float(zero), figure_of_merit=float(fom1[0]),
                        lines=int(two_theta.size), indexed=int(count[0]))
  return result


# ---------------------------------------------------------------------------------------------
# Orthorhombic lattices: Q = A h² + B k² + C l² (A = 1/a², B = 1/b², C = 1/c²), three parameters
# and a zero shift. Searched only when no lattice of one or two parameters indexes the lines.

ORTHORHOMBIC_CENTRINGS = ("P", "C", "A", "B", "I", "F")
# Three parameters and a zero shift fit a dozen lines by chance more often than two: more lines.
MIN_LINES_THREE_PARAMETERS = 12
# Two edges this close (relative), in the ratio √3 or 2, make the metric tetragonal or hexagonal,
# or a centred supercell of such a lattice, which the searches above would have found had the
# lines been of one.
PSEUDO_SYMMETRY = 2e-3
_ORTHORHOMBIC_TRIAL_LINES = 5
# The reflections each of three of the first lines is taken to be.
_ORTHORHOMBIC_BASE = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1),
                      (1, 1, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2))


@functools.lru_cache(maxsize=None)
def _orthorhombic_inverses() -> np.ndarray:
  """[P, 3, 3]: the inverses of the invertible [h², k², l²] matrices of three base reflections."""
  squares = np.array(_ORTHORHOMBIC_BASE, np.float64) ** 2
  picks = np.array(list(itertools.product(range(len(_ORTHORHOMBIC_BASE)), repeat=3)))
  matrices = squares[picks]
  invertible = np.abs(np.linalg.det(matrices)) > 1e-9
  return np.linalg.inv(matrices[invertible])


def _orthorhombic_candidates(q_obs) -> np.ndarray:
  """Trial (A, B, C) [K, 3], A ≥ B ≥ C: three of the first lines taken as three base
  reflections, Q = A h² + B k² + C l² solved."""
  first = q_obs[:_ORTHORHOMBIC_TRIAL_LINES]
  triplets = np.array(list(itertools.combinations(range(first.size), 3)))
  if triplets.size == 0:
    return np.zeros((0, 3))
  abc = np.einsum("pij,tj->tpi", _orthorhombic_inverses(), first[triplets]).reshape(-1, 3)
  abc = abc[np.all(abc > 0, axis=1)]
  abc = abc[np.all(1 / np.sqrt(abc) <= MAX_CELL_EDGE, axis=1)]
  abc = -np.sort(-abc, axis=1)       # axes in a fixed order: a primitive lattice is the same
  # Trials within a part in 10³ of each other are one (the wide tolerance covers the rest).
  _, first_of_each = np.unique(np.round(np.log(abc) * 1e3), axis=0, return_index=True)
  return abc[np.sort(first_of_each)]


def _allowed_h(centring: str, k: int, l: int):
  """The h a centring allows with (k, l): "all", 0 or 1 (that parity), or None."""
  if centring == "P":
    return "all"
  if centring == "C":
    return k % 2
  if centring == "A":
    return "all" if (k + l) % 2 == 0 else None
  if centring == "B":
    return l % 2
  if centring == "I":
    return (k + l) % 2
  return k % 2 if k % 2 == l % 2 else None           # F


def _score_orthorhombic(q_obs, abc, centring="P"):
  """For K candidates (A, B, C): per line, the misfit to the nearest allowed reflection [K, L]
  and its (h², k², l²) [K, L, 3]; N_calc [K]."""
  a_col, b_col, c_col = abc[:, 0:1], abc[:, 1:2], abc[:, 2:3]
  k_count, l_count = abc.shape[0], q_obs.size
  best = np.full((k_count, l_count), np.inf)
  best_hkl = np.zeros((k_count, l_count, 3))
  n_calc = np.zeros(k_count, np.int64)
  q_max = q_obs[-1]
  for k in range(int(np.sqrt(q_max / abc[:, 1].min())) + 1):
    for l in range(int(np.sqrt(q_max / abc[:, 2].min())) + 1):
      base = b_col[:, 0] * k * k + c_col[:, 0] * l * l
      # A reflection just past the last line may still index it.
      reachable = base <= q_max * 1.01
      if not reachable.any():
        break                                         # larger l reach no further
      parity = _allowed_h(centring, k, l)
      if parity is None:
        continue
      rest = q_obs[None, :] - base[:, None]
      x = np.sqrt(np.clip(rest / a_col, 0, None))
      if parity == "all":
        below, step, first_h = np.floor(x), 1, 0
      else:
        below, step, first_h = 2 * np.floor((x - parity) / 2) + parity, 2, parity
      for h in (np.maximum(below, first_h), below + step):
        dq = np.abs(rest - a_col * h * h)
        if k == 0 and l == 0:
          dq = np.where(h == 0, np.inf, dq)           # (000) is no reflection
        better = (dq < best) & reachable[:, None]
        best = np.where(better, dq, best)
        for axis, index in enumerate((h, k, l)):
          best_hkl[..., axis] = np.where(better, index * index, best_hkl[..., axis])
      limit = np.floor(np.sqrt(np.clip(q_max - base, 0, None) / a_col[:, 0]))
      count = limit + 1 if parity == "all" else np.floor((limit - parity) / 2) + 1
      if k == 0 and l == 0 and first_h == 0:
        count = count - 1
      n_calc += np.where(base <= q_max, np.maximum(count, 0), 0).astype(np.int64)
  return best, best_hkl, n_calc


def _refine_orthorhombic(two_theta, hkl2, indexed, wavelength, zero):
  """Least-squares (A, B, C, zero shift) from the indexed lines' (h², k², l²); None if
  underdetermined."""
  corrected = two_theta - zero
  q = q_of(corrected, wavelength)
  design = np.column_stack([hkl2[indexed], dq_dtwo_theta(corrected, wavelength)[indexed]])
  if design.shape[0] <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
    return None
  solution, *_ = np.linalg.lstsq(design, q[indexed], rcond=None)
  return solution[:3], zero + solution[3]


def _pseudo_symmetric(edges) -> bool:
  a, b, c = sorted(edges)
  return any(abs(ratio / special - 1) < PSEUDO_SYMMETRY
             for ratio in (b / a, c / b, c / a) for special in (1.0, np.sqrt(3), 2.0))


def search_orthorhombic(two_theta, strong, wavelength=GRID_WAVELENGTH) -> Indexing | None:
  """The best orthorhombic fit to lines already selected (peaks.select_lines), whatever its figure
  of merit, with the centring that gives it the best M_N among those indexing as many lines;
  None below MIN_LINES_THREE_PARAMETERS lines or for a pseudo-tetragonal or pseudo-hexagonal
  metric."""
  two_theta = np.asarray(two_theta, np.float64)
  if two_theta.size < MIN_LINES_THREE_PARAMETERS:
    return None
  abc = _orthorhombic_candidates(q_of(two_theta, wavelength))
  if abc.shape[0] == 0:
    return None
  tolerance = dq_dtwo_theta(two_theta, wavelength) * TOLERANCE_DEG
  result = None
  for params, zero, q_corr in _refined_trials(
      two_theta, strong, wavelength, abc, _score_orthorhombic, _refine_orthorhombic,
      lambda p: np.all(p > 0)):
    edges = 1 / np.sqrt(params)
    if _pseudo_symmetric(edges):
      continue
    most = None
    for centring in ORTHORHOMBIC_CENTRINGS:
      dq1, _, n1 = _score_orthorhombic(q_corr, params[None], centring)
      fom1, count = _figure_of_merit(q_corr, tolerance, dq1, n1, strong)
      if most is None:
        most = count[0]                               # the primitive lattice indexes most
      if fom1[0] > 0 and count[0] == most and (
          result is None or fom1[0] > result.figure_of_merit):
        result = Indexing(family="orthorhombic", centring=centring, a=float(edges[0]),
                          b=float(edges[1]), c=float(edges[2]), zero_shift=float(zero),
                          figure_of_merit=float(fom1[0]), lines=int(two_theta.size),
                          indexed=int(count[0]))
  return result


def fit_lattices(two_theta, intensity, wavelength: float = GRID_WAVELENGTH) -> list[Indexing]:
  """The best fit of every lattice (family and centring) to lines already selected
  (peaks.select_lines), whatever its figure of merit; lattices of two parameters only from
  MIN_LINES_TWO_PARAMETERS lines on, the orthorhombic one (search_orthorhombic) from
  MIN_LINES_THREE_PARAMETERS, and nothing below MIN_LINES."""
  two_theta = np.asarray(two_theta, np.float64)
  intensity = np.asarray(intensity, np.float64)
  if two_theta.size < MIN_LINES:
    return []
  strong = intensity >= STRONG_LINE * intensity.max()
  families = FAMILIES if two_theta.size >= MIN_LINES_TWO_PARAMETERS else ("cubic",)
  fits = [r for family in families for centring in CENTRINGS[family]
          if (r := _search(family, centring, two_theta, strong, wavelength)) is not None]
  if (r := search_orthorhombic(two_theta, strong, wavelength)) is not None:
    fits.append(r)
  return fits


def choose(fits: list[Indexing],
           min_figure_of_merit: float = MIN_FIGURE_OF_MERIT) -> Indexing | None:
  """The indexing accepted among fit_lattices' fits: M_N at least `min_figure_of_merit` (twice
  that below MIN_LINES_TWO_PARAMETERS lines). Among the cubic, tetragonal and hexagonal fits,
  the lattice that explains most lines; among those, cubic first (a cubic lattice indexes as
  tetragonal and in hexagonal axes too, with a lower M_N only because those allow more
  reflections), then the best M_N. The orthorhombic fit only when none of those is accepted:
  it indexes the lines of every lattice of higher symmetry as well."""
  accepted = [r for r in fits
              if r.figure_of_merit >= min_figure_of_merit
              * (2 if r.lines < MIN_LINES_TWO_PARAMETERS else 1)]
  high = [r for r in accepted if r.family in FAMILIES]
  if not high:
    return max(accepted, key=lambda r: r.figure_of_merit, default=None)
  most = max(r.indexed for r in high)
  return min((r for r in high if r.indexed == most),
             key=lambda r: (r.family != "cubic", -r.figure_of_merit))


def index_lines(two_theta, intensity, wavelength: float = GRID_WAVELENGTH,
                max_lines: int = peaks_lib.MAX_LINES,
                min_figure_of_merit: float = MIN_FIGURE_OF_MERIT) -> Indexing | None:
  """The high-symmetry lattice that indexes these lines (2θ in degrees at `wavelength` Å), or
  None: peaks.select_lines, fit_lattices, choose."""
  two_theta, intensity = peaks_lib.select_lines(two_theta, intensity, max_lines)
  return choose(fit_lattices(two_theta, intensity, wavelength), min_figure_of_merit)


def index_pattern(pattern: np.ndarray, **kwargs) -> Indexing | None:
  """index_lines on the reflections of a scan on the model grid (peaks.lines_of_pattern)."""
  two_theta, intensity = peaks_lib.lines_of_pattern(pattern)
  return index_lines(two_theta, intensity, **kwargs)
