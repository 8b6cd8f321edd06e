"""Phase identification of a measured scan, and what it does to the model's class probabilities.

Two routes, as a lab takes them: the reference row of the scan's composition whose pattern
matches it answers (search-match, inference/reference.py); otherwise the high-symmetry lattice
that indexes the scan's lines (inference/indexing.py) restricts the model's answer to the
crystal systems it allows. Without either, the model answers alone.
"""

import dataclasses
import os
import warnings

from absl import logging
import numpy as np

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.inference import indexing as indexing_lib
from xxact_jax.inference import inputs
from xxact_jax.inference import patterns
from xxact_jax.inference import reference as reference_lib
from xxact_jax.inference import resample

ROUTES = ("reference", "indexing", "model")

# The probability an accepted lattice's systems hold the answer: on 600 test-split patterns
# augmented as measured scans, 79.4 % of the lattices found allowed the row's crystal system
# (experiments/indexing_check.py --augment; docs/MEASURED.md). The model's own probabilities
# share the rest, so an indexed answer is not given as certain.
LATTICE_WEIGHT = 0.794


@dataclasses.dataclass(frozen=True)
class Identification:
  """What identified a scan: the reference row that matched it (reference.Match, None without a
  reference or a row of its composition) and the lattice that indexes it (indexing.Indexing,
  None when none does); `indexed`: whether indexing ran."""
  match: reference_lib.Match | None = None
  lattice: indexing_lib.Indexing | None = None
  indexed: bool = False

  @property
  def answered(self) -> bool:
    """Whether the reference answers (its match reaches the similarity threshold)."""
    return self.match is not None and self.match.answered

  @property
  def route(self) -> str:
    """Who answers: "reference", "indexing" (the lattice restricts the model) or "model"."""
    return ("reference" if self.answered else "indexing" if self.lattice is not None
            else "model")

  def apply(self, outputs: dict, row: int) -> None:
    """Row `row` of batched class probabilities (crystal_system, spacegroup_number where
    present) with this identification: a match answers; a lattice alone restricts the model."""
    if self.answered:
      labels = {"crystal_system": self.match.crystal_system,
                "spacegroup_number": int(targets_lib.get("spacegroup_number").class_index(
                    self.match.spacegroup_number))}
      for name, label in labels.items():
        if name in outputs:
          outputs[name][row] = override(outputs[name][row], label, self.match.weight)
    elif self.lattice is not None:
      # The classes the lattice allows: bool over crystal systems and over space-group indices.
      systems = np.zeros(len(constants.CRYSTAL_SYSTEMS), bool)
      systems[list(self.lattice.crystal_systems)] = True
      groups = np.zeros(targets_lib.NUM_SPACE_GROUPS, bool)
      for s in self.lattice.crystal_systems:
        first, last = targets_lib.SYSTEM_SPACEGROUPS[constants.CRYSTAL_SYSTEMS[s]]
        groups[first - 1:last] = True
      for name, allowed in (("crystal_system", systems), ("spacegroup_number", groups)):
        if name in outputs:
          # The crystal system carries the lattice's reliability; the space-group ranking stays
          # within the lattice's systems.
          weight = LATTICE_WEIGHT if name == "crystal_system" else 1.0
          outputs[name][row] = restrict(outputs[name][row], allowed, weight)


def identify(composition, scan, wavelength=None, *, targets, reference=None, indexing=True,
             preprocessing: resample.Preprocessing | None = None,
             max_elements: int = 10) -> Identification:
  """The Identification of a measured scan (patterns.MeasuredPattern, a path or arrays): the
  lattice that indexes it (with `indexing` and a classification target), then the reference row
  of its composition that matches it, among the rows of the systems the lattice allows when
  there are such rows."""
  preprocessing = preprocessing or resample.Preprocessing()
  if isinstance(scan, (str, os.PathLike)):
    scan = patterns.read_pattern(os.fspath(scan))   # read once for the indexing and the lookup
  indexed = indexing and bool(set(targets_lib.CLASSIFICATION_TARGETS) & set(targets))
  lattice = index(scan, wavelength, preprocessing) if indexed else None
  match = None
  if reference is not None and composition is not None:
    species, fractions = inputs.encode(composition, max_elements)
    with warnings.catch_warnings():
      # Coverage and an assumed wavelength were reported when the scan was prepared for the
      # model; a second, raw copy of each was printed from here.
      for category in (resample.PartialCoverageWarning, resample.WavelengthAssumedWarning):
        warnings.simplefilter("ignore", category)
      # The reference holds background-free patterns: the scan loses its background likewise.
      pattern = inputs.pattern_on_grid(
          scan, wavelength, dataclasses.replace(preprocessing, background="snip"))
    match = reference.match(species, fractions, pattern,
                            None if lattice is None else lattice.crystal_systems)
  return Identification(match, lattice, indexed)


def index(scan, wavelength=None, preprocessing: resample.Preprocessing | None = None):
  """The cubic, tetragonal, hexagonal or orthorhombic lattice that indexes a scan
  (indexing.Indexing), or None. The lines are found after Kα2 stripping (for an anode's
  doublet) and SNIP background removal, whatever the model's preprocessing."""
  with warnings.catch_warnings():
    # A scan at a single wavelength has no Kα2 to strip; coverage was reported for the model.
    for category in (resample.PreprocessingWarning, resample.PartialCoverageWarning,
                     resample.WavelengthAssumedWarning):
      warnings.simplefilter("ignore", category)
    pattern = inputs.pattern_on_grid(
        scan, wavelength, dataclasses.replace(preprocessing or resample.Preprocessing(),
                                              strip_ka2=True, background="none",
                                              redraw_peaks=False))
  try:
    return indexing_lib.index_pattern(pattern)
  except (ValueError, np.linalg.LinAlgError) as e:
    # Indexing only narrows the model's answer: a scan it cannot handle keeps that answer.
    logging.warning("No indexing of %s: %s", scan if isinstance(scan, str) else "the pattern", e)
    return None


def override(probabilities: np.ndarray, label: int, weight: float = 1.0) -> np.ndarray:
  """Class probabilities with the reference's answer: `weight` on `label`, the rest shared as
  the model's probabilities are."""
  out = (1.0 - weight) * np.asarray(probabilities)
  out[label] += weight
  return out


def restrict(probabilities: np.ndarray, allowed: np.ndarray, weight: float = 1.0) -> np.ndarray:
  """`weight` × the class probabilities conditioned on the allowed classes (uniform over them if
  the model gave them nothing) + (1 − `weight`) × the model's own. With one or two allowed
  classes (a lattice's crystal systems) and weight ≥ 0.5, the most probable class is allowed."""
  p_model = np.asarray(probabilities, np.float64)
  p = np.where(allowed, p_model, 0.0)
  total = p.sum()
  p = p / total if total > 0 else allowed / allowed.sum()
  return (weight * p + (1.0 - weight) * p_model).astype(np.asarray(probabilities).dtype)
