"""Phase identification against a reference dataset: the known phases of a scan's composition.

A lab identifies a known phase by search-match: the compositions it may be, then the reference
pattern that agrees best with the scan. `ReferenceDatabase` does that over a prepared dataset
(by default the training split a checkpoint learnt from): the rows whose composition equals the
scan's (element fractions to 1e-3), each pattern compared with the scan after a common lattice
scaling d → d(1 + ε), |ε| ≤ 3 % (the DFT cell against the room-temperature one), as the
correlation of their square-root intensities broadened to σ = 0.25° over the range the scan
covers (the cosine after subtracting each pattern's mean there, so that a flat or noisy scan does
not look like a pattern with many peaks). The best row's labels are the answer when its
similarity reaches MIN_SIMILARITY, with a probability that grows with the similarity
(`Match.weight`); below it, and for a composition the dataset lacks, the model's prediction
stands.

On the 100 measured development scans, 45 compositions are in mp_36k's train split, and the
reference answers 84 % of them right, where the bimodal model trained on the same rows gets
60 % (docs/MEASURED.md).
"""

import dataclasses
import math

from absl import logging
import numpy as np

from xxact_jax import constants
from xxact_jax import physics

# Lattice scalings tried: ±3 % in 0.2 % steps.
MAX_STRAIN = 0.03
STRAIN_STEPS = 31
# Gaussian σ (degrees) both patterns are broadened by before they are compared, so that small
# peak shifts and widths between a measured and a simulated pattern still overlap.
COMPARE_SIGMA_DEG = 0.25
# Element fractions are compared at this precision.
FRACTION_DECIMALS = 3
# Below this similarity the lookup does not answer: the scan is not a pattern of any row of its
# composition (or no pattern at all). Chosen by experiments/reference_threshold.py on mp_36k
# (docs/MEASURED.md): the highest value that keeps every right answer of the development scans
# (the lowest is 0.452; simulated scans of reference rows score 0.92 or more), while flat, noisy,
# comb and single-peak scans score 0.40, 0.29, 0.28 and (one in ten) 0.52 at most.
MIN_SIMILARITY = 0.45
# The probability an answer at similarity 1 puts on the row's class: no lookup is certain (on the
# development scans a wrong polymorph scored 0.958).
MAX_WEIGHT = 0.95


@dataclasses.dataclass(frozen=True)
class Match:
  """The reference row that agrees best with a scan."""
  material_id: str
  crystal_system: int            # index into constants.CRYSTAL_SYSTEMS
  spacegroup_number: int
  similarity: float              # cosine, 0..1
  strain: float                  # ε of d → d(1 + ε) that aligns the reference with the scan
  candidates: int                # rows of the dataset with the scan's composition
  # Of those, the rows of a crystal system the scan's indexed lattice allows (they alone were
  # compared when there were any); None without a lattice.
  lattice_candidates: int | None = None

  @property
  def answered(self) -> bool:
    """Whether the row answers for the scan: its similarity reaches MIN_SIMILARITY (a lookup by
    composition alone, without a scan, has no similarity and answers)."""
    return not self.similarity < MIN_SIMILARITY   # NaN: no scan compared

  @property
  def weight(self) -> float:
    """The probability the answer puts on the row's class: 0.5 at MIN_SIMILARITY, rising linearly
    to MAX_WEIGHT at similarity 1; the model's probabilities share the rest. At 0.5 or more the
    row's class stays the most probable. 0 when the row does not answer; 0.5 without a scan."""
    if not self.answered:
      return 0.0
    if math.isnan(self.similarity):
      return 0.5
    excess = min(1.0, (self.similarity - MIN_SIMILARITY) / (1.0 - MIN_SIMILARITY))
    return 0.5 + (MAX_WEIGHT - 0.5) * excess


def composition_key(species, fractions) -> tuple:
  """A hashable composition: sorted (atomic number, fraction rounded to 1e-3) pairs."""
  return tuple(sorted((int(z), round(float(f), FRACTION_DECIMALS))
                      for z, f in zip(species, fractions) if z > 0))


def _kernel(sigma_deg: float) -> np.ndarray:
  half = int(math.ceil(4 * sigma_deg / constants.TWO_THETA_STEP))
  x = np.arange(-half, half + 1) * constants.TWO_THETA_STEP
  return np.exp(-0.5 * (x / sigma_deg) ** 2)


def _prepared(patterns: np.ndarray, measured: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """√intensity inside the measured range, broadened, less its mean there, unit norm: [n, 4250].

  Without the mean removed, every pair of non-negative patterns has a positive cosine, and a
  flat or noisy scan scored 0.7–0.9 against patterns with many peaks."""
  x = np.sqrt(np.maximum(np.where(measured, patterns, 0.0), 0.0))
  x = np.stack([np.convolve(row, kernel, mode="same") for row in x])
  measured = np.broadcast_to(measured, x.shape)
  mean = (x * measured).sum(-1, keepdims=True) / np.maximum(measured.sum(-1, keepdims=True), 1)
  x = np.where(measured, x - mean, 0.0)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ReferenceDatabase:
  """The labelled rows of a prepared dataset, looked up by composition.

  Labels and compositions are read once; a row's pattern only when a scan's composition is its.
  """

  def __init__(self, path: str, split: str | None = "train", dataset=None):
    """`dataset`: rows to read instead of opening `path` (a compact reference's
    inference/compact_reference.CompactDataset: the same interface, patterns drawn from peaks)."""
    from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
    self.path, self.split = path, split
    self._dataset = dataset if dataset is not None else open_dataset(path, split)
    batch = self._dataset.read_batch(np.arange(len(self._dataset)),
                                     ("species", "fractions", "crystal_system",
                                      "spacegroup_number"))
    self._crystal_system = batch["crystal_system"]
    self._spacegroup = batch["spacegroup_number"]
    self._index: dict[tuple, list[int]] = {}
    for i, key in enumerate(map(composition_key, batch["species"], batch["fractions"])):
      if self._crystal_system[i] >= 0:
        self._index.setdefault(key, []).append(i)
    self._kernel = _kernel(COMPARE_SIGMA_DEG)
    self._grid = constants.two_theta_grid()
    # For each strain, the reference-grid angle that lands on each scan-grid point.
    self._strains = strains = np.linspace(-MAX_STRAIN, MAX_STRAIN, STRAIN_STEPS)
    self._sources = physics.rescale_two_theta(self._grid[None], 1 + strains[:, None],
                                              unreachable=None)

  def __len__(self) -> int:
    return len(self._crystal_system)

  def __repr__(self) -> str:
    return f"ReferenceDatabase({self.path!r}, split={self.split!r}, rows={len(self)})"

  def candidates(self, species, fractions) -> list[int]:
    """Rows (split-relative) with this composition."""
    return self._index.get(composition_key(species, fractions), [])

  def match(self, species, fractions, pattern=None, systems=None) -> Match | None:
    """The row that agrees best with a scan of this composition, or None if none has it.

    pattern: the scan on the 5–90° model grid (max 100, constants.UNMEASURED_INTENSITY where not
    measured); None (or a single candidate) takes the composition's only or first row.
    systems: crystal systems (indices) the scan's indexed lattice allows (indexing.Indexing);
    the composition's rows of those systems are the candidates when it has any, so that the
    lattice picks among polymorphs whose patterns differ by small splittings (tetragonal against
    cubic BaTiO3). Without such rows all are compared.
    """
    all_rows = self.candidates(species, fractions)
    if not all_rows:
      return None
    rows, lattice_candidates = all_rows, None
    if systems is not None:
      allowed = [r for r in all_rows if self._crystal_system[r] in tuple(systems)]
      lattice_candidates = len(allowed)
      rows = allowed or all_rows
    similarity, strain, best = float("nan"), 0.0, rows[0]
    if pattern is not None:
      pattern = np.asarray(pattern, np.float64)
      measured = pattern >= 0
      if measured.any() and pattern[measured].max() > 0:
        scan = _prepared(pattern[None], measured[None], self._kernel)[0]
        references = self._dataset.read_batch(np.asarray(rows), ("xrd",))["xrd"].astype(
            np.float64)
        best_score = -1.0
        for row, reference in zip(rows, references):
          shifted = np.stack([np.interp(s, self._grid, reference, left=0.0, right=0.0)
                              for s in self._sources])
          scores = _prepared(shifted, np.broadcast_to(measured, shifted.shape),
                             self._kernel) @ scan
          k = int(np.argmax(scores))
          if scores[k] > best_score:
            best_score, best, strain = float(scores[k]), row, float(self._strains[k])
        similarity = best_score
    return Match(material_id=self._dataset.material_ids(np.asarray([best]))[0],
                 crystal_system=int(self._crystal_system[best]),
                 spacegroup_number=int(self._spacegroup[best]), similarity=similarity,
                 strain=strain, candidates=len(all_rows),
                 lattice_candidates=lattice_candidates)


def resolve(reference, data_path: str | None):
  """A ReferenceDatabase from `reference`: None or "none" (no lookups), "auto" (the training
  split of `data_path`, the dataset a checkpoint learnt from, if it is still there), the path of
  a prepared dataset (all its valid rows) or of a compact reference (a shipped model's
  reference.npz, inference/compact_reference.py), or a ReferenceDatabase itself."""
  if reference is None or isinstance(reference, ReferenceDatabase):
    return reference
  if reference == "none":
    return None
  from xxact_jax.inference import compact_reference  # pylint: disable=g-import-not-at-top
  if compact_reference.is_compact(reference):
    return compact_reference.open_reference(reference)
  if reference == "auto" and compact_reference.is_compact(data_path):
    return compact_reference.open_reference(data_path)
  if reference == "auto":
    if not data_path:
      return None
    try:
      return ReferenceDatabase(data_path, "train")
    except (FileNotFoundError, OSError, ValueError) as e:
      logging.warning("No reference lookups: the training data %r cannot be opened (%s)",
                      data_path, e)
      return None
  return ReferenceDatabase(reference, None)
