"""Predictor and report on unimodal models (initialised parameters, no training needed)."""

import os

import jax
import ml_collections
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from xxact_jax import constants
from xxact_jax.inference.errors import InputError
from xxact_jax.inference.model import Model
from xxact_jax.inference.predictor import Predictor
from xxact_jax.models import build_model
from xxact_jax.models import model_config
from xxact_jax.report import __main__ as report_cli
from xxact_jax.report import analysis

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "patterns")
TARGETS = ("formation_energy_per_atom", "crystal_system")
STATS = {"formation_energy_per_atom": {"mean": -1.0, "std": 2.0}}


def initialised_predictor(name, max_elements=10):
  model_cfg = model_config(name, size="tiny")
  model_cfg.targets = TARGETS
  config = ml_collections.ConfigDict({"model": model_cfg})
  variables = build_model(model_cfg).init(
      jax.random.key(0), np.zeros((1, max_elements), np.int32),
      np.zeros((1, max_elements), np.float32),
      np.zeros((1, constants.NUM_XRD_POINTS), np.float32), train=False)
  return Predictor(Model(variables["params"], config, STATS, max_elements, batch_size=64))


def test_xrd_only_model_reports_on_its_own_cls(embedded_dataset, tmp_path):
  from xxact_jax import data  # pylint: disable=g-import-not-at-top
  predictor = initialised_predictor("xrd_transformer")
  with pytest.raises(InputError, match="needs an XRD pattern"):
    predictor.prepare("NaCl", None)
  with pytest.warns(UserWarning):
    embedded = predictor.embed("NaCl", os.path.join(FIXTURES, "NaCl_CuKa.csv"))
  assert set(embedded) == {"embedding"}

  split = data.open_dataset(embedded_dataset, split="test")
  outputs, labels = report_cli.run_split(predictor, split, max_samples=80)
  assert outputs["embedding"].shape[0] == 80
  results = analysis.analyse(outputs, labels)
  assert set(results["silhouette"]) == {"embedding"}
  written = analysis.write_report(results, None, str(tmp_path), {"model": "xrd_transformer"},
                                  predictor.embeddings)
  assert {os.path.basename(p) for p in written} == {
      "pca_embedding.png", "confusion_crystal_system.png", "accuracy_per_crystal_system.png",
      "parity_formation_energy_per_atom.png", "summary.md"}
  known = labels["crystal_system"] >= 0
  assert results["silhouette"]["embedding"]["mean"] == pytest.approx(
      sk_metrics.silhouette_score(outputs["embedding"][known], labels["crystal_system"][known]),
      abs=1e-6)


def test_composition_only_model_needs_no_pattern():
  predictor = initialised_predictor("crabnet")
  record = predictor.predict("Fe2O3")
  assert record["formation_energy_per_atom"]["unit"] == "eV/atom"
  assert sum(record["crystal_system"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
  # A pattern is ignored, but the formula is still checked.
  with pytest.raises(ValueError, match="unknown element symbol 'Qq'"):
    predictor.predict("Qq2")
  batch = predictor.predict_batch(["Fe2O3", "NaCl", "Fe2O3"])
  assert batch["formation_energy_per_atom"][0] == pytest.approx(
      batch["formation_energy_per_atom"][2], rel=1e-6)
  assert batch["formation_energy_per_atom"][0] == pytest.approx(
      record["formation_energy_per_atom"]["value"], rel=1e-5, abs=1e-6)
