"""Probabilities that mean what they say: calibration error, risk–coverage, temperatures fitted
on augmented patterns and applied to measured scans only, answers below a confidence withheld."""

import json
import os
import shutil

import numpy as np
import pytest

from xxact_jax.inference import answers
from xxact_jax.inference import calibration
from xxact_jax.inference import predictor as predictor_lib
from xxact_jax.report import calibration as report

from float32_tolerance import assert_close


def test_calibration_error_and_risk_coverage():
  rng = np.random.default_rng(0)
  confidence = rng.uniform(0.2, 1.0, 20000)
  calibrated = rng.uniform(size=confidence.size) < confidence
  assert report.expected_calibration_error(confidence, calibrated) < 0.02
  over = rng.uniform(size=confidence.size) < confidence ** 3       # right less often than said
  assert report.expected_calibration_error(confidence, over) > 0.15
  coverage, accuracy = report.risk_coverage([0.9, 0.1, 0.8, 0.3], [True, False, True, False])
  np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(accuracy, [1.0, 1.0, 2 / 3, 0.5])
  assert report.accuracy_at_coverage([0.9, 0.1, 0.8, 0.3], [True, False, True, False], 0.5) == 1
  summary = report.selective_summary([0.9, 0.1, 0.8, 0.3], [True, False, False, False], 0.5)
  assert summary["answered"] == 2 and summary["accuracy_answered"] == 0.5


def test_fit_temperature_recovers_the_temperature_of_the_labels():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 3, (20000, 7))
  z = logits / 2.5
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  labels = (p.cumsum(1) > rng.uniform(size=(len(p), 1))).argmax(1)
  assert report.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_min_confidence_withholds_unsure_answers():
  result = {"crystal_system": {"prediction": "cubic",
                               "probabilities": {"cubic": 0.4, "hexagonal": 0.35,
                                                 "trigonal": 0.25}},
            "band_gap": {"value": 1.0, "unit": "eV"}}
  same = answers.apply_min_confidence(json.loads(json.dumps(result)),
                                            ("crystal_system", "band_gap"), 0.3)
  assert same == result
  withheld = answers.apply_min_confidence(result, ("crystal_system", "band_gap"), 0.5)
  assert withheld["crystal_system"]["prediction"] == "undetermined"
  assert [c["prediction"] for c in withheld["crystal_system"]["candidates"]] == [
      "cubic", "hexagonal", "trigonal"]


def test_temperatures_are_fitted_on_augmented_patterns_and_change_measured_scans_only(
    workdir, embedded_dataset, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(workdir, run)
  plain = predictor_lib.load(run, reference="none", indexing=False)
  assert plain.temperatures == {}
  stored = calibration.calibrate(plain, embedded_dataset, "test", rows=64)
  for t in ("crystal_system", "spacegroup_number"):
    fitted = stored["targets"][t]
    assert fitted["temperature"] > 0
    assert fitted["negative_log_likelihood_after"] <= (
        fitted["negative_log_likelihood_before"] + 1e-9)
    assert 0 <= fitted["expected_calibration_error_after"] <= 1
  calibrated = predictor_lib.load(run, reference="none", indexing=False)
  temperature = calibrated.temperatures["crystal_system"]
  assert temperature == pytest.approx(stored["targets"]["crystal_system"]["temperature"])
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  batch = open_dataset(embedded_dataset, "test").read_batch(np.arange(4))
  arrays = (batch["species"], batch["fractions"], batch["xrd"].astype(np.float32))
  before = plain.predict_arrays(*arrays, measured=True)["crystal_system"]
  simulated = calibrated.predict_arrays(*arrays, measured=False)["crystal_system"]
  measured = calibrated.predict_arrays(*arrays, measured=True)["crystal_system"]
  assert_close(simulated, before)
  z = np.log(before) / temperature
  expected = np.exp(z - z.max(1, keepdims=True))
  np.testing.assert_allclose(measured, expected / expected.sum(1, keepdims=True), atol=1e-4)
  assert os.path.isfile(os.path.join(run, calibration.CALIBRATION_FILE))
  # evaluate --measured scores the calibration against the same model without its temperatures.
  raw = calibrated.uncalibrated()
  assert raw.temperatures == {} and calibrated.temperatures["crystal_system"] == temperature
  assert_close(raw.predict_arrays(*arrays, measured=True)["crystal_system"], before)
