"""Models trained alike (seeds of one recipe) whose outputs are averaged."""

import numpy as np

from xxact_jax.inference import model as model_lib
from xxact_jax.inference.errors import InputError


class Ensemble:
  """The averaged outputs of `models` (inference/model.py), one model being an ensemble of one.

  They must predict the same targets (averaged by name, in any order) from inputs encoded alike.
  The embeddings are the first model's, since those of separately trained models do not share
  axes.
  """

  def __init__(self, models: list[model_lib.Model]):
    if not models:
      raise ValueError("an ensemble needs at least one model")
    first = models[0]
    for other in models[1:]:
      for what, mine, theirs in (
          ("targets", sorted(first.targets), sorted(other.targets)),
          ("max_elements", first.max_elements, other.max_elements),
          ("inputs (composition, XRD)", (first.uses_composition, first.uses_xrd),
           (other.uses_composition, other.uses_xrd))):
        if mine != theirs:
          raise InputError(f"an ensemble's models must agree on {what}: {mine} in "
                           f"{first.workdir}, {theirs} here", path=other.workdir)
    self.models = list(models)

  @property
  def first(self) -> model_lib.Model:
    return self.models[0]

  @property
  def targets(self) -> tuple[str, ...]:
    return self.first.targets

  @property
  def workdirs(self) -> list[str]:
    return [m.workdir for m in self.models]

  def predict_each(self, species, fractions, xrd, measured=False) -> list[dict[str, np.ndarray]]:
    """Model.predict_arrays' outputs of each model alone."""
    return [m.predict_arrays(species, fractions, xrd, measured) for m in self.models]

  def predict_arrays(self, species, fractions, xrd, measured=False) -> dict[str, np.ndarray]:
    """Model.predict_arrays averaged over the models (average_outputs)."""
    return average_outputs(self.predict_each(species, fractions, xrd, measured), self.targets)

  def uncalibrated(self) -> "Ensemble":
    """The same models with their uncalibrated probabilities."""
    return Ensemble([m.uncalibrated() for m in self.models])


def average_outputs(outputs: list[dict], targets) -> dict:
  """An ensemble's outputs from its models' (Ensemble.predict_each): each target's regression
  values and class probabilities averaged; the first model's embeddings."""
  result = dict(outputs[0])
  if len(outputs) > 1:
    for t in targets:
      result[t] = np.mean([o[t] for o in outputs], axis=0).astype(result[t].dtype)
  return result
