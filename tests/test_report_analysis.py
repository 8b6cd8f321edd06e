"""Report numbers and figures from synthetic arrays, checked against scikit-learn."""

import json
import os
import re

import numpy as np
import pytest
from sklearn import decomposition
from sklearn import metrics as sk_metrics

from xxact_jax import constants
from xxact_jax.inference.errors import InputError
from xxact_jax.report import analysis
from xxact_jax.report import compare
from xxact_jax.report import curves
from xxact_jax.report import embeddings
from xxact_jax.report import metrics


def clustered(num_per_class=(40, 25, 30, 1, 20), dim=6, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.concatenate([np.full(n, c) for c, n in enumerate(num_per_class)])
  centres = rng.normal(scale=3.0, size=(len(num_per_class), dim))
  return centres[labels] + rng.normal(size=(labels.size, dim)), labels


def test_silhouette_of_a_known_layout_including_a_singleton_class():
  # Two classes on a line: {0, 1} and {10}; a third class {4} alone.
  x = np.array([[0.0], [1.0], [10.0], [4.0]])
  labels = np.array([0, 0, 1, 2])
  scores = embeddings.silhouette_samples(x, labels)
  # Sample 0: a = 1, b = min(10, 4) = 4 -> 0.75; sample 1: a = 1, b = 3 -> 2/3.
  np.testing.assert_allclose(scores[:2], [0.75, 2 / 3], atol=1e-12)
  assert scores[2] == 0.0 and scores[3] == 0.0   # alone in their class
  assert np.all(embeddings.silhouette_samples(x, np.arange(4)) == 0.0)


def test_silhouette_by_class_mean_and_per_class():
  x, labels = clustered(seed=1)
  result = embeddings.silhouette_by_class(x, labels, constants.CRYSTAL_SYSTEMS)
  assert result["mean"] == pytest.approx(sk_metrics.silhouette_score(x, labels), abs=1e-12)
  reference = sk_metrics.silhouette_samples(x, labels)
  for label in np.unique(labels):
    name = constants.CRYSTAL_SYSTEMS[label]
    assert result["per_class"][name] == pytest.approx(reference[labels == label].mean(), abs=1e-12)
    assert result["counts"][name] == int((labels == label).sum())
  with pytest.raises(ValueError, match="two classes"):
    embeddings.silhouette_by_class(x, np.zeros(len(x), int))


def test_pca_matches_sklearn_up_to_sign():
  x, _ = clustered(seed=2)
  coords, explained = embeddings.pca_2d(x)
  reference = decomposition.PCA(n_components=2).fit(x)
  np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-8)
  np.testing.assert_allclose(np.abs(coords), np.abs(reference.transform(x)), atol=1e-8)


def test_classification_and_regression_metrics_match_sklearn():
  rng = np.random.default_rng(3)
  true = rng.integers(0, 6, 300)   # class 6 absent
  predicted = np.where(rng.random(300) < 0.7, true, rng.integers(0, 7, 300))
  matrix = metrics.confusion_matrix(true, predicted, 7)
  np.testing.assert_array_equal(matrix, sk_metrics.confusion_matrix(true, predicted, labels=range(7)))
  per_class = metrics.per_class_accuracy(matrix)
  np.testing.assert_allclose(per_class[:6], sk_metrics.recall_score(
      true, predicted, labels=range(6), average=None))
  assert np.isnan(per_class[6])
  assert metrics.accuracy(matrix) == pytest.approx(sk_metrics.accuracy_score(true, predicted))
  with pytest.raises(ValueError, match="predicted labels"):
    metrics.confusion_matrix(true, predicted + 1, 7)

  y = rng.normal(size=200)
  y_hat = y + rng.normal(scale=0.3, size=200)
  y_missing = y.copy()
  y_missing[:10] = np.nan
  scores = metrics.regression_scores(y_missing, y_hat)
  assert scores["count"] == 190
  assert scores["mae"] == pytest.approx(sk_metrics.mean_absolute_error(y[10:], y_hat[10:]))
  assert scores["r2"] == pytest.approx(sk_metrics.r2_score(y[10:], y_hat[10:]))


def synthetic_outputs(n=150, seed=4):
  rng = np.random.default_rng(seed)
  systems = rng.integers(0, 7, n)
  systems[:3] = -1  # missing labels
  centres = rng.normal(scale=2.0, size=(7, 8))
  embedding = centres[np.maximum(systems, 0)] + rng.normal(size=(n, 8))
  logits = rng.normal(size=(n, 7)) + 3.0 * np.eye(7)[np.maximum(systems, 0)]
  energy = rng.normal(size=n)
  outputs = {"embedding": embedding, "comp_cls": embedding[:, :4],
             "crystal_system": logits, "formation_energy_per_atom": energy + 0.1,
             "spacegroup_number": rng.normal(size=(n, 230))}
  labels = {"crystal_system": systems, "formation_energy_per_atom": energy,
            "spacegroup_number": rng.integers(1, 231, n)}
  return outputs, labels


def test_report_writes_every_figure_and_summary_numbers_match_sklearn(tmp_path):
  outputs, labels = synthetic_outputs()
  records = [{"step": s, "train/loss": 1.0 / s, "eval/crystal_system_accuracy": 0.1 * s}
             for s in range(1, 6)]
  results = analysis.analyse(outputs, labels)
  written = analysis.write_report(results, records, str(tmp_path), {"workdir": "synthetic"})
  names = sorted(os.path.basename(p) for p in written)
  assert names == sorted(["pca_embedding.png", "confusion_crystal_system.png",
                          "accuracy_per_crystal_system.png",
                          "parity_formation_energy_per_atom.png",
                          "learning_curves.png", "summary.md"])
  for name in names:
    assert os.path.getsize(tmp_path / name) > 1000

  known = labels["crystal_system"] >= 0
  x, y = outputs["embedding"][known], labels["crystal_system"][known]
  text = (tmp_path / "summary.md").read_text()
  mean_row = re.search(r"\| \*\*mean\*\* \| (\d+) \| \*\*([-\d.]+)\*\* \| \*\*([-\d.]+)\*\*",
                       text)
  assert int(mean_row.group(1)) == known.sum()
  assert float(mean_row.group(2)) == pytest.approx(sk_metrics.silhouette_score(x, y), abs=5e-5)
  assert float(mean_row.group(3)) == pytest.approx(
      sk_metrics.silhouette_score(outputs["comp_cls"][known], y), abs=5e-5)
  reference = sk_metrics.silhouette_samples(x, y)
  for index, name in enumerate(constants.CRYSTAL_SYSTEMS):
    row = re.search(rf"\| {name} \| (\d+) \| ([-\d.]+) \|", text.split("Silhouette")[1])
    assert float(row.group(2)) == pytest.approx(reference[y == index].mean(), abs=5e-5)
  accuracy = sk_metrics.accuracy_score(y, outputs["crystal_system"][known].argmax(1))
  assert f"| crystal_system | {known.sum()} | {100 * accuracy:.2f} |" in text
  assert "| formation_energy_per_atom | eV/atom | 150 | 0.1000 |" in text


def test_embedding_subset_is_capped_and_seeded():
  outputs, labels = synthetic_outputs(n=120)
  first = analysis.analyse(outputs, labels, max_embedding_samples=50)
  second = analysis.analyse(outputs, labels, max_embedding_samples=50)
  assert len(first["embedding_indices"]) == 50
  np.testing.assert_array_equal(first["embedding_indices"], second["embedding_indices"])


# metrics.jsonl and the convergence comparison.

def write_run(directory, curve, steps, num_train_steps=None, key="eval/formation_energy_per_atom_mae"):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
    for step in steps:
      f.write(json.dumps({"step": step, "train/loss": 1.0}) + "\n")
      f.write(json.dumps({"step": step, key: curve(step)}) + "\n")
  if num_train_steps:
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump({"num_train_steps": num_train_steps}, f)
  return str(directory)


def test_read_metrics_names_bad_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 2}\n{"step": 2, "a": \n')
  with pytest.raises(InputError, match=r"metrics\.jsonl, line 2: not valid JSON"):
    curves.read_metrics(str(tmp_path))
  with pytest.raises(InputError, match="no metrics.jsonl"):
    curves.read_metrics(str(tmp_path / "nowhere"))


def test_series_keeps_last_value_per_step_and_skips_nan():
  records = [{"step": 2, "m": 1.0}, {"step": 1, "m": 3.0}, {"step": 2, "m": 0.5},
             {"step": 3, "m": float("nan")}, {"step": 4}]
  steps, values = curves.series(records, "m")
  np.testing.assert_array_equal(steps, [1, 2])
  np.testing.assert_array_equal(values, [3.0, 0.5])


def test_compare_threshold_steps_and_speedup(tmp_path):
  steps = range(500, 20_001, 500)
  baseline = write_run(tmp_path / "baseline", lambda s: 0.5 * np.exp(-s / 4000) + 0.05,
                       steps, num_train_steps=20_000)
  faster = write_run(tmp_path / "pretrained", lambda s: 0.5 * np.exp(-s / 1000) + 0.05, steps)
  never = write_run(tmp_path / "stuck", lambda s: 0.4, steps)
  result = compare.compare([baseline, faster, never], "eval/formation_energy_per_atom_mae")
  threshold = 0.5 * np.exp(-5000 / 4000) + 0.05  # baseline at 25 % of 20k steps
  assert result["threshold"] == pytest.approx(threshold)
  reach = [run["reach_step"] for run in result["runs"]]
  assert reach[0] == 5000
  # The faster curve first drops to the threshold at s >= 1250 -> the 1500 evaluation.
  assert reach[1] == 1500
  assert reach[2] is None
  assert result["runs"][1]["speedup"] == pytest.approx(5000 / 1500)
  assert result["runs"][2]["speedup"] is None
  assert "not reached" in compare.to_markdown(result)


def test_compare_accuracy_is_higher_is_better_and_cli_writes(tmp_path, capsys):
  key = "eval/crystal_system_accuracy"
  steps = range(100, 2001, 100)
  a = write_run(tmp_path / "a", lambda s: s / 2000, steps, key=key)   # total from last step
  b = write_run(tmp_path / "b", lambda s: min(1.0, s / 500), steps, key=key)
  out = tmp_path / "out"
  assert compare.main([a, b, f"--output_dir={out}", "--names=baseline,mxm"]) == 0
  saved = json.loads((out / "compare.json").read_text())[0]
  assert saved["threshold"] == pytest.approx(0.25)
  assert [r["reach_step"] for r in saved["runs"]] == [500, 200]
  assert saved["runs"][1]["speedup"] == pytest.approx(2.5)
  assert (out / f"compare_{key.replace('/', '_')}.png").stat().st_size > 1000
  assert "2.50×" in capsys.readouterr().out


def test_compare_cli_errors_are_clear(tmp_path, capsys):
  a = write_run(tmp_path / "a", lambda s: 1.0, [1, 2], key="eval/other")
  assert compare.main([a, f"--output_dir={tmp_path / 'out'}"]) == 2
  assert "none of the default metrics" in capsys.readouterr().err
  assert compare.main([a, str(tmp_path / "missing"), "--metric=eval/other"]) == 2
  assert "missing/metrics.jsonl: no metrics.jsonl" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()
