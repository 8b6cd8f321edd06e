"""Temperatures that make a model's class probabilities on measured scans mean what they say.

A network trained on simulated patterns is over-confident on measured ones. The package's stand-in
for measured scans it may look at is its own measured-like augmentation (data/augment.py, every
pattern augmented): `calibrate` scores a held-out split of a prepared dataset so augmented and
fits, per classification target, the temperature T of softmax(logits / T) with the least
negative log-likelihood (report/calibration.py), on rows whose composition the train split lacks
(the scans the model answers are those the reference lookup does not know). It writes WORKDIR/calibration.json; the
Predictor then applies T to the scans it is told are measured (simulated patterns and CIFs keep
the model's own probabilities). The development scans check the result (`evaluate --measured`
reports the expected calibration error); they are not used to fit it.

  python -m xxact_jax.evaluate --workdir=DIR --data=DATASET --calibrate [--split=test]
"""

import json
import os

import numpy as np

from xxact_jax import targets as targets_lib
from xxact_jax.inference import reference
from xxact_jax.report import calibration as calibration_lib

CALIBRATION_FILE = "calibration.json"
DEFAULT_ROWS = 2000


def read_temperatures(workdir: str) -> dict[str, float]:
  """{target: temperature} from WORKDIR/calibration.json ({} when the run was not calibrated)."""
  path = os.path.join(workdir, CALIBRATION_FILE)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
    return {t: float(v["temperature"]) for t, v in stored["targets"].items()
            if np.isfinite(float(v["temperature"])) and float(v["temperature"]) > 0}
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: unreadable calibration ({e}); delete it or calibrate again") from None


def augmented_patterns(xrd: np.ndarray, augment_config, seed: int) -> np.ndarray:
  """Every pattern augmented as a diffractometer would record it (the training augmentation
  with apply_prob 1), with a fixed key."""
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import augment  # pylint: disable=g-import-not-at-top
  config = augment.default_config(enabled=True)
  if augment_config is not None:
    config.update(augment_config)
  config.enabled = True
  config.apply_prob = 1.0
  run = jax.jit(lambda key, x: augment.augment_xrd(key, x, config))
  out = []
  for start in range(0, len(xrd), 256):
    key = jax.random.fold_in(jax.random.key(seed), start)
    out.append(np.asarray(run(key, xrd[start:start + 256])))
  return np.concatenate(out)


def calibrate(predictor, data_path: str, split: str = "test", rows: int = DEFAULT_ROWS,
              seed: int = 0) -> dict:
  """Fits and writes the temperatures of `predictor`'s workdir (one model, not an ensemble)."""
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  if len(predictor.ensemble.models) > 1:
    raise ValueError("calibrate each run of an ensemble on its own")
  dataset = open_dataset(data_path, split=split)
  # The model answers a measured scan when the reference lookup does not, i.e. mostly for
  # compositions the training rows lack: the temperature is fitted on such rows.
  candidates = np.arange(len(dataset))
  if split != "train":
    known = _composition_keys(open_dataset(data_path, split="train"))
    keys = _composition_keys(dataset)
    candidates = np.array([i for i, k in enumerate(keys) if k not in known], np.int64)
  rng = np.random.default_rng(seed)
  index = np.sort(rng.choice(candidates, size=min(rows, len(candidates)), replace=False))
  batch = dataset.read_batch(index)
  xrd = augmented_patterns(batch["xrd"].astype(np.float32),
                           predictor.config.get("augment"), seed)
  raw = predictor.ensemble.first.uncalibrated()
  out = raw.predict_arrays(batch["species"], batch["fractions"], xrd, measured=True)
  result = {}
  for t in predictor.targets:
    target = targets_lib.get(t)
    if target.is_regression:
      continue
    labels = target.class_index(np.asarray(batch[t]))
    log_p = np.log(np.maximum(out[t], 1e-12))
    temperature = calibration_lib.fit_temperature(log_p, labels)
    hit = out[t].argmax(-1) == labels
    scaled = _softmax(log_p / temperature)
    rows_labelled = np.flatnonzero(labels >= 0)
    nll = lambda p: float(-np.log(np.maximum(p[rows_labelled, labels[rows_labelled]], 1e-12))
                          .mean())
    result[t] = {
        "temperature": temperature,
        "expected_calibration_error_before": calibration_lib.expected_calibration_error(
            out[t].max(-1)[labels >= 0], hit[labels >= 0]),
        "expected_calibration_error_after": calibration_lib.expected_calibration_error(
            scaled.max(-1)[labels >= 0], hit[labels >= 0]),
        "negative_log_likelihood_before": nll(_softmax(log_p)),
        "negative_log_likelihood_after": nll(scaled),
        "accuracy": float(hit[labels >= 0].mean())}
  stored = {"data": os.path.abspath(data_path), "split": split, "rows": int(len(index)),
            "rows_from": "compositions absent from the train split" if split != "train"
                         else "the train split",
            "seed": seed, "patterns": "augmented (data/augment.py, apply_prob 1)",
            "targets": result}
  with open(os.path.join(predictor.workdir, CALIBRATION_FILE), "w", encoding="utf-8") as f:
    json.dump(stored, f, indent=1)
  return stored


def _composition_keys(dataset) -> list:
  """Each row's reference.composition_key, for matching across splits."""
  keys = []
  for start in range(0, len(dataset), 4096):
    batch = dataset.read_batch(np.arange(start, min(start + 4096, len(dataset))),
                               fields=("species", "fractions"))
    keys.extend(map(reference.composition_key, batch["species"], batch["fractions"]))
  return keys


def _softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)
