"""A sample's outputs and identification as the JSON that predict and evaluate write.

One place for the output schema: values with units, class probabilities, top-5 space groups;
for a scan, the answer of the route that gave it (reference or indexing) with the model's own
kept beside it as "model_prediction", "model_probabilities" and "model_top5", the reference
match and the lattice as dicts, and "undetermined" below a minimum confidence.
"""

import math

import numpy as np

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.inference import identification as identification_lib
from xxact_jax.inference import indexing as indexing_lib
from xxact_jax.inference import reference as reference_lib

UNDETERMINED = "undetermined"
CANDIDATES = 3
# What the outputs say for a scan that indexing tried and no lattice indexed ("indexing_note").
NONE_FOUND = ("indexing ran and found no cubic, tetragonal, hexagonal or orthorhombic lattice "
              f"indexing the scan's lines (figure of merit ≥ "
              f"{indexing_lib.MIN_FIGURE_OF_MERIT:g}); the answer is not restricted")


def format_prediction(outputs: dict, targets) -> dict:
  """One sample's outputs as {target: ...}: values with units, class probabilities, top-5 groups."""
  result = {}
  for t in targets:
    value = np.asarray(outputs[t])
    target = targets_lib.get(t)
    if target.is_regression:
      result[t] = {"value": float(value), "unit": target.unit}
    elif target.class_names:
      probabilities = {name: float(p) for name, p in zip(target.class_names, value)}
      result[t] = {"prediction": target.class_names[int(np.argmax(value))],
                   "probabilities": probabilities}
    else:
      top = np.argsort(-value)[:5]
      result[t] = {"top5": [{t: int(target.label_of(i)), "probability": float(value[i])}
                            for i in top]}
  return result


def match_json(match: reference_lib.Match) -> dict:
  out = {"material_id": match.material_id,
         "crystal_system": constants.CRYSTAL_SYSTEMS[match.crystal_system],
         "spacegroup_number": match.spacegroup_number,
         "similarity": None if math.isnan(match.similarity) else round(match.similarity, 4),
         "strain": round(match.strain, 4), "candidates": match.candidates,
         "answered": match.answered}
  if match.answered:
    out["probability"] = round(match.weight, 4)
  else:
    out["note"] = (f"similarity {match.similarity:.2f} is below {reference_lib.MIN_SIMILARITY}: "
                   "no reference row of this composition matches the scan, so the reference "
                   "does not answer")
  if match.lattice_candidates is not None:
    out["lattice_candidates"] = match.lattice_candidates
  return out


def lattice_json(lattice: indexing_lib.Indexing) -> dict:
  return {"lattice": lattice.family, "centring": lattice.centring, "a": round(lattice.a, 4),
          "b": round(lattice.a if lattice.b is None else lattice.b, 4),
          "c": round(lattice.c, 4), "zero_shift": round(lattice.zero_shift, 4),
          "figure_of_merit": round(lattice.figure_of_merit, 2), "lines": lattice.lines,
          "indexed": lattice.indexed,
          "crystal_systems": [constants.CRYSTAL_SYSTEMS[i] for i in lattice.crystal_systems]}


def identified_prediction(outputs: dict, targets,
                          identification: identification_lib.Identification | None = None
                          ) -> dict:
  """format_prediction of one sample's outputs with its identification: the reference's answer
  for a match, the model's answer restricted to the lattice's systems without one (the answer
  computed as for a batch, Identification.apply, so that predict and evaluate agree); the
  model's own answer kept beside either; "reference" and "indexing" describe the route."""
  result = format_prediction(outputs, targets)
  if identification is None:
    return result
  match, lattice = identification.match, identification.lattice
  if match is not None:
    result["reference"] = match_json(match)
  if lattice is not None:
    result["indexing"] = lattice_json(lattice)
  if identification.answered or lattice is not None:
    identified = {k: np.asarray(v)[None].copy() for k, v in outputs.items()}
    identification.apply(identified, 0)
    answer = format_prediction({k: v[0] for k, v in identified.items()}, targets)
    source = "reference" if identification.answered else "indexing"
    if "crystal_system" in result:
      model = result["crystal_system"]
      result["crystal_system"] = {**answer["crystal_system"], "model_prediction":
                                  model["prediction"], "model_probabilities":
                                  model["probabilities"], "source": source}
    if "spacegroup_number" in result:
      result["spacegroup_number"] = {**answer["spacegroup_number"],
                                     "model_top5": result["spacegroup_number"]["top5"],
                                     "source": source}
  return result


def apply_min_confidence(result: dict, targets, min_confidence: float) -> dict:
  """`result` (identified_prediction's) with every class answer whose probability is below
  `min_confidence` replaced by "undetermined" and its top candidates; returns it."""
  if min_confidence <= 0:
    return result
  for t in targets:
    answer = result.get(t)
    if not isinstance(answer, dict):
      continue
    if "probabilities" in answer:
      ranked = sorted(answer["probabilities"].items(), key=lambda kv: -kv[1])
      if ranked[0][1] < min_confidence:
        answer["prediction"] = UNDETERMINED
        answer["candidates"] = [{"prediction": n, "probability": p}
                                for n, p in ranked[:CANDIDATES]]
    elif "top5" in answer and answer["top5"][0]["probability"] < min_confidence:
      answer["prediction"] = UNDETERMINED
    if answer.get("prediction") == UNDETERMINED:
      answer["min_confidence"] = float(min_confidence)
  return result
