"""The experiment summaries: rows from a run's config.json, metrics.jsonl and wall time."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "experiments",
                                                                   f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_run(directory, model, loss, evals, trains, wall=None):
  os.makedirs(directory)
  config = {"model": {"name": model, "readout": "fused_cls"}, "regression_loss": loss,
            "targets": ["formation_energy_per_atom", "crystal_system"],
            "task_sampling": "uniform"}
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
    for record in trains + evals:
      f.write(json.dumps(record) + "\n")
  if wall is not None:
    with open(os.path.join(directory, "done"), "w") as f:
      f.write(f"{wall}\n")


def test_summarize_runs_takes_the_last_and_best_evaluation(tmp_path):
  summarize = load_script("summarize_runs")
  evals = [{"step": s, "eval/loss": 1.0, "eval/formation_energy_per_atom_mae_meV": mae,
            "eval/crystal_system_accuracy": acc}
           for s, mae, acc in ((500, 150.0, 0.5), (1000, 90.0, 0.6), (1500, 110.0, 0.7))]
  trains = [{"step": s, "loss": 1.0, "loss/formation_energy_per_atom": 0.1 * s / 100}
            for s in (100, 200, 300, 400, 500, 600)]
  write_run(tmp_path / "xxact_mse", "xxact", "mse", evals, trains, wall=120)
  write_run(tmp_path / "crabnet", "crabnet", "robust_l1", evals[:1], trains[:1])
  os.makedirs(tmp_path / "not_a_run")
  rows = summarize.main(str(tmp_path))
  assert [r["run"] for r in rows] == ["crabnet", "xxact_mse"]
  xxact = rows[1]
  assert xxact["fe_mae_meV"] == 110.0 and xxact["cs_accuracy"] == 0.7
  assert (xxact["best_fe_mae_meV"], xxact["best_fe_step"]) == (90.0, 1000)
  assert xxact["train_loss_fe"] == pytest.approx(0.1 * (200 + 300 + 400 + 500 + 600) / 500)
  assert xxact["wall_s"] == 120 and rows[0]["wall_s"] is None
  text = (tmp_path / "summary.md").read_text()
  assert "| xxact_mse | xxact | mse |" in text and "2.0 min" in text
  assert rows[0]["readout"] == "–" and xxact["readout"] == "fused_cls"
  assert xxact["head"] == "linear"
  assert json.loads((tmp_path / "summary.json").read_text()) == rows


def test_summarize_measured_counts_each_source(tmp_path):
  summarize = load_script("summarize_measured")
  run_dir = tmp_path / "xxact_augmented"
  write_run(run_dir, "xxact", "mse", [{"step": 2000, "eval/loss": 1.0,
                                       "eval/crystal_system_accuracy": 0.7}], [])
  predictions = tmp_path / "eval" / "xxact_augmented" / "snip"
  os.makedirs(predictions)
  records = [("rruff_a", "cubic", "cubic"), ("rruff_b", "cubic", "monoclinic"),
             ("iucr_c", "trigonal", "trigonal")]
  with open(predictions / "predictions.jsonl", "w") as f:
    for scan_id, label, predicted in records:
      f.write(json.dumps({"id": scan_id, "label": {"crystal_system": label},
                          "crystal_system": predicted}) + "\n")
    f.write(json.dumps({"id": "rruff_bad", "error": "no such file"}) + "\n")
  with open(tmp_path / "summary.jsonl", "w") as f:
    f.write(json.dumps({"run": "xxact_augmented", "preprocessing": "snip", "step": 2000,
                        "crystal_system_accuracy": 2 / 3, "crystal_system_top5_accuracy": 1.0,
                        "crystal_system_majority_rate": 2 / 3}) + "\n")
  text = summarize.main([str(tmp_path)])
  assert "| xxact_augmented | snip | **66.7%** | 50.0% (2) | 100.0% (1) | – | 100.0% | 70.0% |" in text
  assert not (tmp_path / "tradeoff.png").exists()    # no run scored alone and identified
  with open(tmp_path / "summary.jsonl", "a") as f:
    for preprocessing, accuracy in (("none", 0.5), ("none,reference,indexing", 0.6)):
      scored = tmp_path / "eval" / "xxact_augmented" / preprocessing.replace(",", "_")
      os.makedirs(scored)
      (scored / "predictions.jsonl").write_text("")
      f.write(json.dumps({"run": "xxact_augmented", "preprocessing": preprocessing, "step": 2000,
                          "crystal_system_accuracy": accuracy,
                          "crystal_system_top5_accuracy": 1.0,
                          "crystal_system_majority_rate": 0.5}) + "\n")
  summarize.main([str(tmp_path), "--runs=xxact_augmented"])
  rows = [json.loads(l) for l in open(tmp_path / "summary.jsonl")]
  assert summarize.tradeoff_points(rows, str(tmp_path)) == [("xxact_augmented", 0.7, 0.5, 0.6)]
  assert (tmp_path / "tradeoff.png").stat().st_size > 1000
  assert summarize.plot_tradeoff([str(tmp_path)], str(tmp_path / "none.png"), {"other"}) is None


def test_fit_fractions_recovers_a_power_law(tmp_path):
  fit = load_script("fit_fractions")
  data = tmp_path / "data"
  data.mkdir()
  (data / "metadata.json").write_text(json.dumps({"splits": {"train": 10_000}}))
  for fraction in (0.1, 0.3, 1.0):
    rows = round(fraction * 10_000)
    name = "xxact_multi" + ("" if fraction == 1.0 else f"_fraction{fraction}")
    run = tmp_path / "runs" / name
    write_run(str(run), "xxact", "mse",
              [{"step": 10, "eval/loss": 1.0,
                "eval/formation_energy_per_atom_mae_meV": 5000.0 * rows ** -0.4,
                "eval/crystal_system_accuracy": 1 - 2.0 * rows ** -0.25}], [], wall=1)
    config = json.loads((run / "config.json").read_text())
    config["data"] = {"path": str(data), "train_fraction": fraction}
    (run / "config.json").write_text(json.dumps(config))
  # An unfinished run (no `done`) is not a point.
  write_run(str(tmp_path / "runs" / "crabnet_multi_fraction0.1"), "crabnet", "robust_l1",
            [{"step": 10, "eval/loss": 1.0}], [])
  fit.main([str(tmp_path / "runs")])
  result = json.loads((tmp_path / "runs" / "fractions.json").read_text())
  assert list(result["models"]) == ["xxact_multi"]
  fits = result["models"]["xxact_multi"]["fits"]
  assert fits["eval/formation_energy_per_atom_mae_meV"]["b"] == pytest.approx(-0.4, abs=1e-9)
  assert fits["eval/crystal_system_accuracy"]["b"] == pytest.approx(-0.25, abs=1e-9)
  assert [p["train_rows"] for p in result["models"]["xxact_multi"]["points"]] == [1000, 3000,
                                                                               10000]
  assert (tmp_path / "runs" / "fractions.png").stat().st_size > 1000


def test_indexing_check_counts_what_the_indexing_finds(small_dataset, tmp_path, capsys):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import indexing  # pylint: disable=g-import-not-at-top
  check = load_script("indexing_check")
  output = tmp_path / "check.json"
  check.main([f"--data={small_dataset}", "--split=train", "--rows=100", "--thresholds=20,1000",
              f"--output={output}"])
  results = json.loads(output.read_text())
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == results
  dataset = open_dataset(small_dataset, "train")
  batch = dataset.read_batch(np.arange(len(dataset)), ("xrd", "crystal_system"))
  found = [indexing.index_pattern(x) for x, y in zip(batch["xrd"], batch["crystal_system"])
           if y >= 0]
  at_20 = results["thresholds"]["20.0"]
  assert results["rows"] == len(found)
  assert at_20["indexed"] == sum(f is not None for f in found)
  assert sum(c["rows"] for c in at_20["by_crystal_system"].values()) == len(found)
  assert results["thresholds"]["1000.0"]["indexed"] <= at_20["indexed"]
  # Augmented as measured: the same rows, indexed again.
  check.main([f"--data={small_dataset}", "--split=train", "--rows=2", "--augment",
              f"--output={output}"])
  assert json.loads(output.read_text())["augment"] is True


def test_ensemble_simulated_scores_each_model_and_their_mean(workdir, embedded_dataset, capsys,
                                                            tmp_path):
  """Two copies of one run: the ensemble scores as the run does, and the run's score is the
  share of test rows whose most probable class is the label."""
  import shutil  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import xxact_jax  # pylint: disable=g-import-not-at-top
  from xxact_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / "copy")   # the same workdir twice is refused as an ensemble
  shutil.copytree(workdir, copy)
  load_script("ensemble_simulated").main([f"--workdir={workdir},{copy}",
                                          f"--data={embedded_dataset}", "--batch=64"])
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  test = data_lib.open_dataset(embedded_dataset, "test")
  batch = test.read_batch(np.arange(len(test)))
  keep = batch["crystal_system"] >= 0
  probabilities = xxact_jax.load(workdir).predict_arrays(
      batch["species"][keep], batch["fractions"][keep], batch["xrd"][keep])["crystal_system"]
  expected = float(np.mean(probabilities.argmax(-1) == batch["crystal_system"][keep]))
  assert result["rows"] == int(keep.sum())
  assert result["model_accuracy"] == [pytest.approx(expected)] * 2
  assert result["ensemble_accuracy"] == pytest.approx(expected)
