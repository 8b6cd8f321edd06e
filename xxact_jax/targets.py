"""What each prediction target is: the one place the loss, evaluation, predictor, report and
dataset statistics ask.

A target is a regression (stored in its unit, standardised with the train split's mean and std
for training, NaN when missing) or a classification (stored as an integer label, -1 when missing;
`label_offset` maps labels to class indices, e.g. space groups 1..230 to 0..229).
"""

import dataclasses

import numpy as np

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal",
                   "trigonal", "hexagonal", "cubic")
NUM_SPACE_GROUPS = 230
MISSING_CLASS = -1
# Space-group numbers of each crystal system (International Tables).
SYSTEM_SPACEGROUPS = {
    "triclinic": (1, 2), "monoclinic": (3, 15), "orthorhombic": (16, 74),
    "tetragonal": (75, 142), "trigonal": (143, 167), "hexagonal": (168, 194),
    "cubic": (195, 230)}


def crystal_system_of(spacegroup: int) -> str:
  for system, (first, last) in SYSTEM_SPACEGROUPS.items():
    if first <= spacegroup <= last:
      return system
  raise ValueError(f"No space group {spacegroup}; numbers run 1–230.")


@dataclasses.dataclass(frozen=True)
class Target:
  """One prediction target.

  Attributes:
    name: the dataset column and the model output's key.
    num_classes: 0 for a regression target.
    label_offset: stored label − offset = class index.
    unit: of a regression target's values.
    class_names: names of the classes, where they have names.
    minimum: the smallest physical value of a regression target (a band gap is not negative);
      predictions are clipped to it.
    scaled_mae: (suffix, factor): the evaluation also reports the MAE × factor under
      `<name>_mae_<suffix>` (formation energies in meV/atom, as the paper's tables).
  """
  name: str
  num_classes: int = 0
  label_offset: int = 0
  unit: str = ""
  class_names: tuple[str, ...] = ()
  minimum: float | None = None
  scaled_mae: tuple[str, float] | None = None

  @property
  def is_regression(self) -> bool:
    return self.num_classes == 0

  @property
  def head_width(self) -> int:
    """Output width of the target's head: 1 for a regression, the class count otherwise."""
    return 1 if self.is_regression else self.num_classes

  def is_labelled(self, labels, xp=np):
    """True where `labels` (stored values; numpy or jax.numpy via `xp`) hold a label."""
    if self.is_regression:
      return xp.isfinite(labels)
    return labels >= self.label_offset

  def class_index(self, labels, xp=np):
    """Class indices 0..num_classes-1 of stored labels; MISSING_CLASS where unlabelled."""
    return xp.where(labels >= self.label_offset, labels - self.label_offset, MISSING_CLASS)

  def label_of(self, index):
    """The stored label of a class index (e.g. space group = index + 1)."""
    return index + self.label_offset

  @staticmethod
  def standardise(values, stats: dict):
    """Values in the unit -> the standardised scale the model predicts."""
    return (values - stats["mean"]) / stats["std"]

  def destandardise(self, values, stats: dict):
    """The model's standardised output -> values in the unit, clipped to the target's minimum."""
    values = values * stats["std"] + stats["mean"]
    return values if self.minimum is None else values.clip(min=self.minimum)


REGISTRY = {t.name: t for t in (
    Target("formation_energy_per_atom", unit="eV/atom", scaled_mae=("meV", 1000.0)),
    Target("band_gap", unit="eV", minimum=0.0),
    Target("crystal_system", num_classes=len(CRYSTAL_SYSTEMS), class_names=CRYSTAL_SYSTEMS),
    Target("spacegroup_number", num_classes=NUM_SPACE_GROUPS, label_offset=1),
)}

REGRESSION_TARGETS = tuple(n for n, t in REGISTRY.items() if t.is_regression)
CLASSIFICATION_TARGETS = {n: t.num_classes for n, t in REGISTRY.items() if not t.is_regression}
ALL_TARGETS = tuple(REGISTRY)
# The multi-target setting of the paper (formation energy and crystal system).
PAPER_TARGETS = ("formation_energy_per_atom", "crystal_system")
TARGET_UNITS = {n: t.unit for n, t in REGISTRY.items() if t.is_regression}


def check_names(names, where: str = "") -> tuple[str, ...]:
  """`names` as a tuple, or a ValueError listing those that are not targets (and the known ones)."""
  names = tuple(names)
  unknown = [t for t in names if t not in REGISTRY]
  if unknown:
    raise ValueError(f"Unknown target(s) {unknown}{where}; known: {list(REGISTRY)}")
  return names


def get(name: str) -> Target:
  """The target called `name`; a clear error for an unknown one."""
  if name not in REGISTRY:
    raise ValueError(f"Unknown target {name!r}; known: {list(REGISTRY)}")
  return REGISTRY[name]
