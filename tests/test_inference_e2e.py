"""End to end on one small trained `:runlocal` workdir: load, predict CLI, report CLI, compare.

One training run (session fixture) serves every test here.
"""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

import xxact_jax
from xxact_jax import constants
from xxact_jax import predict as predict_cli
from xxact_jax.report import __main__ as report_cli
from xxact_jax.report import compare
from float32_tolerance import assert_close

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "patterns")
TRAIN_STEPS = 20   # of the conftest `workdir` fixture (RUNLOCAL_TRAIN_STEPS)


def fixture(name):
  return os.path.join(FIXTURES, name)


@pytest.fixture(scope="session")
def test_split(predictor):
  from xxact_jax import data  # pylint: disable=g-import-not-at-top
  return data.open_dataset(predictor.extra["data_path"], split="test")


def test_the_runlocal_run_the_inference_tests_read_trained(workdir):
  """Its training loss and eval loss fell, and it left the rows and checkpoint a finished run
  leaves (the same run as the inference tests: nothing more is compiled)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from test_train import check_run, read_metrics  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  rows = read_metrics(workdir)
  evals = [r for r in rows if "eval/loss" in r]
  check_run(workdir, {k: v for k, v in evals[-1].items() if k != "step"}, config)
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses[-1] < 0.9 * losses[0], losses
  assert evals[-1]["eval/loss"] < evals[0]["eval/loss"], evals


def check_prediction(record):
  assert np.isfinite(record["formation_energy_per_atom"]["value"])
  assert record["formation_energy_per_atom"]["unit"] == "eV/atom"
  assert record["band_gap"]["unit"] == "eV"
  probabilities = record["crystal_system"]["probabilities"]
  assert list(probabilities) == list(constants.CRYSTAL_SYSTEMS)
  assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
  assert record["crystal_system"]["prediction"] == max(probabilities, key=probabilities.get)
  top5 = record["spacegroup_number"]["top5"]
  assert len(top5) == 5 and all(1 <= g["spacegroup_number"] <= 230 for g in top5)
  assert [g["probability"] for g in top5] == sorted((g["probability"] for g in top5),
                                                    reverse=True)


def run_predict(args, tmp_path, name="out.jsonl"):
  output = tmp_path / name
  code = predict_cli.main(list(args) + [f"--output={output}"])
  records = ([json.loads(line) for line in output.read_text().splitlines()]
             if output.exists() else None)
  return code, records


# Python API.

def test_load_restores_the_trained_heads(predictor, workdir):
  assert predictor.targets == constants.ALL_TARGETS
  assert predictor.step == TRAIN_STEPS
  assert predictor.max_elements == predictor.extra["max_elements"]
  latest = xxact_jax.load(workdir, checkpoint="latest")
  assert latest.step == TRAIN_STEPS


def test_predict_formula_and_measured_pattern(predictor):
  with pytest.warns(UserWarning, match="marked unmeasured"):
    record = predictor.predict("Si", fixture("Si_CuKa.xy"))
  check_prediction(record)


def test_batched_predictions_equal_single_ones(predictor):
  formulas = ["NaCl", "Al2O3", "TiO2"]
  patterns = [fixture("NaCl_CuKa.csv"), fixture("Al2O3_MoKa.xrdml"),
              fixture("TiO2_CuKa_list.xrdml")]
  with pytest.warns(UserWarning):
    batch = predictor.predict_batch(formulas, patterns)
    singles = [predictor.predict(f, p) for f, p in zip(formulas, patterns)]
  for i, single in enumerate(singles):
    assert batch["formation_energy_per_atom"][i] == pytest.approx(
        single["formation_energy_per_atom"]["value"], rel=1e-5, abs=1e-6)
    assert_close(batch["crystal_system"][i],
                 list(single["crystal_system"]["probabilities"].values()))


def test_embed_returns_composition_xrd_and_fused_cls(predictor):
  with pytest.warns(UserWarning):
    single = predictor.embed("NaCl", fixture("NaCl_CuKa.xye"))
    many = predictor.embed(["NaCl", "Si"], [fixture("NaCl_CuKa.xye"), fixture("Si_CuKa.xy")])
  assert set(single) == {"embedding", "comp_cls", "xrd_cls"}
  for key, value in single.items():
    assert value.ndim == 1 and np.all(np.isfinite(value))
    assert_close(many[key][0], value)
  assert not np.allclose(many["embedding"][0], many["embedding"][1])


def test_predictions_agree_between_eval_loop_api_and_cli(predictor, workdir, test_split,
                                                         tmp_path):
  """The same records through the trainer's evaluation, load().predict_arrays and the CLI."""
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import eval_loop as eval_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  config = predictor.config
  eval_step = jax.jit(step_lib.make_eval_step(build_model(config.model), config,
                                              predictor.target_stats))
  _, evaluated = eval_lib.evaluate(eval_step, predictor.params, test_split, config,
                                   sharding_lib.make_mesh(), return_predictions=True)
  order = np.argsort(evaluated["index"])
  rows = evaluated["index"][order][:6]
  batch = test_split.read_batch(rows)
  api = predictor.predict_arrays(batch["species"], batch["fractions"],
                                 batch["xrd"].astype(np.float32))

  # The CLI gets each record as a formula and a two-column file on the model grid.
  grid = constants.two_theta_grid()
  table = tmp_path / "records.csv"
  with open(table, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "formula", "xrd_file"])
    for i, row in enumerate(rows):
      species, fractions = batch["species"][i], batch["fractions"][i]
      formula = "".join(f"{constants.ELEMENTS[z - 1]}{x:.9f}"
                        for z, x in zip(species, fractions) if z)
      name = f"record{row}.xy"
      np.savetxt(tmp_path / name, np.stack([grid, batch["xrd"][i].astype(np.float64)], 1),
                 fmt="%.10g")
      writer.writerow([str(row), formula, name])
  # The model's own answers: indexing would restrict those of patterns it indexes.
  code, cli = run_predict([f"--workdir={workdir}", f"--input={table}", "--noindexing"],
                          tmp_path)
  assert code == 0 and len(cli) == len(rows)

  for i, row in enumerate(rows):
    e = np.flatnonzero(evaluated["index"] == row)[0]
    for target in constants.REGRESSION_TARGETS:
      looped = evaluated[f"pred/{target}"][e]
      assert api[target][i] == pytest.approx(looped, rel=1e-4, abs=1e-5)
      assert cli[i][target]["value"] == pytest.approx(looped, rel=1e-4, abs=1e-4)
    assert np.argmax(api["crystal_system"][i]) == evaluated["pred/crystal_system"][e]
    assert (constants.CRYSTAL_SYSTEMS.index(cli[i]["crystal_system"]["prediction"])
            == evaluated["pred/crystal_system"][e])
    assert np.argmax(api["spacegroup_number"][i]) + 1 == evaluated["pred/spacegroup_number"][e]
    assert cli[i]["spacegroup_number"]["top5"][0]["spacegroup_number"] == (
        evaluated["pred/spacegroup_number"][e])


# The predict CLI.

def test_cli_formula_with_xy_and_xrdml(workdir, tmp_path):
  code, records = run_predict([f"--workdir={workdir}", "--formula=Si",
                               f"--xrd={fixture('Si_CuKa.xy')}"], tmp_path, "xy.jsonl")
  assert code == 0 and len(records) == 1
  check_prediction(records[0])
  assert records[0]["formula"] == "Si"
  assert any("marked unmeasured" in w for w in records[0]["warnings"])
  assert any("Cu Kα (1.54184 Å) assumed" in w for w in records[0]["warnings"])   # .xy: no λ

  code, records = run_predict([f"--workdir={workdir}", "--formula=Al2O3",
                               f"--xrd={fixture('Al2O3_MoKa.xrdml')}"], tmp_path, "mo.jsonl")
  assert code == 0
  check_prediction(records[0])


def test_cli_cif_matches_the_dataset_featurisation(workdir, predictor, tmp_path):
  code, records = run_predict([f"--workdir={workdir}", f"--cif={fixture('NaCl.cif')}"],
                              tmp_path)
  assert code == 0
  check_prediction(records[0])
  assert records[0]["formula"] == "NaCl"
  from xxact_jax.data import featurize  # pylint: disable=g-import-not-at-top
  from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top
  features = featurize.featurize_structure(Structure.from_file(fixture("NaCl.cif")),
                                           predictor.max_elements)
  direct = predictor.predict_arrays(features["species"][None], features["fractions"][None],
                                    features["xrd"].astype(np.float16).astype(np.float32)[None])
  assert_close(records[0]["band_gap"]["value"], direct["band_gap"][0])
  # The Python API reads the same CIF the same way, from its path or its text.
  for cif in (fixture("NaCl.cif"), open(fixture("NaCl.cif")).read()):
    api = predictor.predict(cif=cif)
    assert_close(api["band_gap"]["value"], records[0]["band_gap"]["value"])
  with pytest.raises(ValueError, match="not both"):
    predictor.predict("NaCl", cif=fixture("NaCl.cif"))


def test_api_checks_the_wavelength_once_for_every_entry_point(predictor):
  from xxact_jax.inference.errors import InputError  # pylint: disable=g-import-not-at-top
  with pytest.raises(InputError) as e:
    predictor.predict("Si", fixture("Si_CuKa.xy"), wavelength="Xx")
  assert e.value.field == "wavelength"


def test_cli_csv_of_several_rows_as_subprocess(workdir, tmp_path):
  table = tmp_path / "samples.csv"
  table.write_text(
      "id,formula,xrd_file,wavelength\n"
      f"si,Si,{fixture('Si_CuKa.xy')},\n"
      f"nacl,NaCl,{fixture('NaCl_CuKa.csv')},Cu\n"
      f"alumina,Al2O3,{fixture('Al2O3_MoKa.xrdml')},\n"
      f"rutile,TiO2,{fixture('TiO2_CuKa_list.xrdml')},1.5406\n")
  result = subprocess.run(
      [sys.executable, "-m", "xxact_jax.predict", f"--workdir={workdir}", f"--input={table}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["id"] for r in records] == ["si", "nacl", "alumina", "rutile"]
  assert [r["line"] for r in records] == [2, 3, 4, 5]
  for record in records:
    check_prediction(record)
  cif_table = tmp_path / "cifs.csv"
  cif_table.write_text(f"cif\n{fixture('NaCl.cif')}\n{fixture('NaCl.cif')}\n")
  code, cifs = run_predict([f"--workdir={workdir}", f"--input={cif_table}"], tmp_path)
  assert code == 0 and cifs[0]["band_gap"] == cifs[1]["band_gap"]


# Bad input: a clear error, exit code 2, and no output file.

def write_bad_pattern(tmp_path, line_number, text, name="bad.xy"):
  lines = open(fixture("Si_CuKa.xy")).read().splitlines()
  lines[line_number - 1] = text
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return str(path)


@pytest.mark.parametrize("formula, message", [
    ("Xx2O3", r"unknown element symbol 'Xx'"),
    ("Fe2(O3", r"Bad formula 'Fe2\(O3'"),
])
def test_cli_bad_formula(workdir, tmp_path, capsys, formula, message):
  code, records = run_predict([f"--workdir={workdir}", f"--formula={formula}",
                               f"--xrd={fixture('NaCl_CuKa.csv')}"], tmp_path)
  assert code == 2 and records is None
  assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("line, text, message", [
    (40, "10.7400 nan", r"bad\.xy, line 40, field 'intensity': intensity is nan"),
    (41, "10.7600 abc", r"bad\.xy, line 41: expected two numbers"),
    (42, "10.0000 300", r"bad\.xy, line 42, field '2θ': 2θ must increase"),
])
def test_cli_bad_pattern_file(workdir, tmp_path, capsys, line, text, message):
  path = write_bad_pattern(tmp_path, line, text)
  code, records = run_predict([f"--workdir={workdir}", "--formula=Si", f"--xrd={path}"],
                              tmp_path)
  assert code == 2 and records is None
  assert re.search(message, capsys.readouterr().err)


def test_cli_pattern_outside_range_and_bad_csv_row(workdir, tmp_path, capsys):
  high = tmp_path / "high.xy"
  high.write_text("".join(f"{92 + 0.05 * i:.2f} {1 + i % 5}\n" for i in range(200)))
  code, records = run_predict([f"--workdir={workdir}", "--formula=Si", f"--xrd={high}"],
                              tmp_path)
  assert code == 2 and records is None
  assert "high.xy: 2θ range 92.00–101.95° (92.00–101.95° on the Cu Kα scale) lies entirely " \
         "outside" in capsys.readouterr().err

  table = tmp_path / "rows.csv"
  table.write_text(f"formula,xrd_file\nSi,{fixture('Si_CuKa.xy')}\nQq,{fixture('Si_CuKa.xy')}\n")
  code, records = run_predict([f"--workdir={workdir}", f"--input={table}"], tmp_path)
  assert code == 1 and len(records) == 2   # the good row is predicted, the bad one named
  check_prediction(records[0])
  assert re.search(r"rows\.csv, line 3, field 'formula': .*'Qq'", records[1]["error"])
  assert re.search(r"rows\.csv, line 3, field 'formula': .*'Qq'", capsys.readouterr().err)


def test_workdir_without_checkpoint(tmp_path, capsys):
  empty = tmp_path / "empty_run"
  empty.mkdir()
  code, records = run_predict([f"--workdir={empty}", "--formula=Si",
                               f"--xrd={fixture('Si_CuKa.xy')}"], tmp_path)
  assert code == 2 and records is None
  assert re.search(r"empty_run: No checkpoint in workdir", capsys.readouterr().err)
  assert report_cli.main([f"--workdir={empty}"]) == 2
  assert not (empty / "report").exists()


# The report and the convergence comparison.

def test_report_writes_figures_and_silhouette_matches_sklearn(workdir, predictor, test_split):
  assert report_cli.main([f"--workdir={workdir}", "--split=test"]) == 0
  report = os.path.join(workdir, "report")
  expected = {"pca_embedding.png", "confusion_crystal_system.png",
              "accuracy_per_crystal_system.png", "parity_formation_energy_per_atom.png",
              "parity_band_gap.png", "learning_curves.png", "summary.md"}
  assert expected <= set(os.listdir(report))
  for name in expected:
    assert os.path.getsize(os.path.join(report, name)) > 1000
  assert not [n for n in os.listdir(workdir) if n.startswith(".report-staging")]

  batch = test_split.read_batch(np.arange(len(test_split)))
  embedding = predictor.predict_arrays(batch["species"], batch["fractions"],
                                       batch["xrd"].astype(np.float32))["embedding"]
  known = batch["crystal_system"] >= 0
  reference = sk_metrics.silhouette_score(embedding[known], batch["crystal_system"][known])
  text = open(os.path.join(report, "summary.md")).read()
  mean = float(re.search(r"\| \*\*mean\*\* \| \d+ \| \*\*([-\d.]+)\*\*", text).group(1))
  assert mean == pytest.approx(reference, abs=6e-5)


def test_compare_cli_on_real_metrics(workdir, tmp_path):
  out = tmp_path / "compare"
  assert compare.main([workdir, workdir, f"--output_dir={out}", "--names=a,b"]) == 0
  saved = json.loads((out / "compare.json").read_text())
  assert {r["metric"] for r in saved} == {"eval/formation_energy_per_atom_mae",
                                          "eval/crystal_system_accuracy"}
  for result in saved:
    assert [run["speedup"] for run in result["runs"]] == [1.0, 1.0]


def test_evaluate_measured_index(workdir, predictor, tmp_path, capsys):
  """python -m xxact_jax.evaluate --measured: batched predictions equal the API's, metrics by
  the training-time names, a compressed scan read directly, an unreadable scan reported."""
  import gzip  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  with open(fixture("Si_CuKa.xy"), "rb") as src, gzip.open(tmp_path / "Si.xy.gz", "wb") as dst:
    shutil.copyfileobj(src, dst)
  shutil.copy(fixture("NaCl_CuKa.xye"), tmp_path / "NaCl.xye")
  shutil.copy(fixture("Al2O3_MoKa.xrdml"), tmp_path / "Al2O3.xrdml")
  index = tmp_path / "index.csv"
  index.write_text(
      "id,file,formula,crystal_system,spacegroup_number,wavelength_angstrom\n"
      "si,Si.xy.gz,Si,cubic,227,\n"
      "nacl,NaCl.xye,NaCl,cubic,225,1.54184\n"
      "corundum,Al2O3.xrdml,Al2O3,trigonal,167,\n"
      "missing,nothing.xy,Fe2O3,trigonal,167,\n")
  out = tmp_path / "out"
  evaluate.main([f"--workdir={workdir}", f"--measured={index}", f"--output={out}"])
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert json.loads((out / "metrics.json").read_text()) == metrics
  assert metrics["scans"] == 4 and metrics["scans_evaluated"] == 3
  assert metrics["scans_failed"] == 1
  assert metrics["crystal_system_count"] == 3
  assert metrics["crystal_system_majority_rate"] == pytest.approx(2 / 3)
  records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
  assert [r["id"] for r in records] == ["si", "nacl", "corundum", "missing"]
  assert "no such file" in records[-1]["error"]
  expected = predictor.predict("Si", fixture("Si_CuKa.xy"))["crystal_system"]["prediction"]
  assert records[0]["crystal_system"] == expected
  correct = [r["crystal_system"] == r["label"]["crystal_system"] for r in records[:3]]
  assert metrics["crystal_system_accuracy"] == pytest.approx(np.mean(correct))
  assert metrics["crystal_system_accuracy/cubic"] == pytest.approx(np.mean(correct[:2]))
  assert 0 <= metrics["spacegroup_number_accuracy"] <= metrics[
      "spacegroup_number_top5_accuracy"] <= 1
  assert (out / "confusion_crystal_system.png").stat().st_size > 0
  # Who answered each scan: the routes partition the scans, and their accuracies are the
  # records' own.
  routes = metrics["routes"]
  assert sum(routes[r]["scans"] for r in ("reference", "indexing", "model")) == 3
  assert routes["all"]["accuracy"] == pytest.approx(metrics["crystal_system_accuracy"])
  for route in ("reference", "indexing", "model"):
    mine = [c for c, r in zip(correct, records[:3]) if r["route"] == route]
    assert routes[route]["scans"] == len(mine)
    if mine:
      assert routes[route]["accuracy"] == pytest.approx(np.mean(mine))
  assert 0 <= metrics["expected_calibration_error"] <= 1
  assert (out / "risk_coverage.png").stat().st_size > 0
  # Above every probability, no scan is answered: each is undetermined.
  evaluate.main([f"--workdir={workdir}", f"--measured={index}", f"--output={tmp_path / 'sure'}",
                 "--min_confidence=1.01"])
  sure = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert sure["selective"]["answered"] == 0 and sure["selective"]["coverage"] == 0
  assert sure["crystal_system_accuracy"] == metrics["crystal_system_accuracy"]
  kept = [json.loads(line) for line in (tmp_path / "sure" / "predictions.jsonl").read_text()
          .splitlines()][:3]
  assert all(r["crystal_system_answer"] == "undetermined" for r in kept)
  # A label the package does not know is a clear error naming the line.
  index.write_text("file,formula,crystal_system\nSi.xy.gz,Si,cubik\n")
  with pytest.raises(SystemExit, match="line 2.*cubik"):
    evaluate.main([f"--workdir={workdir}", f"--measured={index}", f"--output={out}"])
  index.write_text("file,formula,crystal_system,wavelength_angstrom\nSi.xy.gz,Si,cubic,Cu\n"
                   "Si.xy.gz,Si,cubic,copper\n")
  with pytest.raises(SystemExit, match="line 3.*wavelength_angstrom.*copper"):
    evaluate.main([f"--workdir={workdir}", f"--measured={index}", f"--output={out}"])


def test_an_ensemble_averages_its_models_outputs(workdir, predictor, test_split, tmp_path,
                                                 capsys):
  """load of several workdirs: class probabilities and regression values are the mean of the
  models'; embeddings are the first model's; a missing member is named; evaluate takes the
  workdirs separated by commas."""
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference.errors import InputError  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  batch = test_split.read_batch(np.arange(min(4, len(test_split))))
  species, fractions, xrd = (batch[k] for k in ("species", "fractions", "xrd"))
  copy = str(tmp_path / "copy")   # one run given twice is refused: a copy stands for a 2nd run
  shutil.copytree(workdir, copy)
  ensemble = xxact_jax.load(f"{workdir},{copy}")
  assert len(ensemble.ensemble.models) == 2
  other = ensemble.ensemble.models[1]
  other.params = jax.tree.map(lambda x: x * 0.7, other.params)
  mine = predictor.predict_arrays(species, fractions, xrd)
  theirs = other.predict_arrays(species, fractions, xrd)
  both = ensemble.predict_arrays(species, fractions, xrd)
  for t in predictor.targets:
    assert not np.allclose(mine[t], theirs[t])
    assert_close(both[t], (mine[t] + theirs[t]) / 2)
  assert_close(both["embedding"], mine["embedding"])
  with pytest.raises(InputError, match="missing: no such workdir"):
    xxact_jax.load([workdir, str(tmp_path / "missing")])
  index = tmp_path / "index.csv"
  index.write_text("file,formula,crystal_system\n"
                   f"{fixture('Si_CuKa.xy')},Si,cubic\n")
  evaluate.main([f"--workdir={workdir},{copy}", f"--measured={index}",
                 f"--output={tmp_path / 'out'}"])
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert metrics["ensemble"] == 2 and metrics["scans_evaluated"] == 1
  assert metrics["workdir"] == f"{os.path.abspath(workdir)},{os.path.abspath(copy)}"


def test_evaluate_dataset_matches_training_eval_and_the_api(workdir, predictor, tmp_path,
                                                            capsys):
  """evaluate --data: on the run's own split it reproduces the training-time eval; on other
  files prepared as a test set (--test_fraction=1) it agrees with the predict API."""
  from xxact_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import build_dataset  # pylint: disable=g-import-not-at-top
  from xxact_jax.report import curves  # pylint: disable=g-import-not-at-top

  def run(*args):
    evaluate.main([f"--workdir={workdir}", *args])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

  own = run(f"--data={predictor.extra['data_path']}", f"--output={tmp_path / 'own'}",
            "--checkpoint=latest")
  final = [r for r in curves.read_metrics(workdir) if r.get("step") == TRAIN_STEPS
           and "eval/loss" in r][-1]
  for key in ("crystal_system_accuracy", "spacegroup_number_accuracy", "band_gap_mae",
              "formation_energy_per_atom_mae_meV", "loss/crystal_system", "num_examples"):
    assert_close(own[key], final[f"eval/{key}"], err_msg=key)   # other batch sizes

  other = str(tmp_path / "held_out")
  build_dataset.prepare_dataset([os.path.join(ROOT, "tests", "fixtures", "mp_small.csv.gz")], other,
                                workers=0, test_fraction=1.0)
  dataset = data_lib.open_dataset(other, split="test")
  assert len(dataset) == len(data_lib.open_dataset(other))
  out = tmp_path / "held_out_eval"
  metrics = run(f"--data={other}", f"--output={out}")
  assert json.loads((out / "metrics.json").read_text()) == metrics
  assert metrics["num_examples"] == len(dataset) and metrics["step"] == predictor.step
  batch = dataset.read_batch(np.arange(len(dataset)))
  api = predictor.predict_arrays(batch["species"], batch["fractions"],
                                 batch["xrd"].astype(np.float32))
  assert metrics["crystal_system_accuracy"] == pytest.approx(
      np.mean(api["crystal_system"].argmax(-1) == batch["crystal_system"]))
  assert metrics["formation_energy_per_atom_mae"] == pytest.approx(
      np.mean(np.abs(api["formation_energy_per_atom"] - batch["formation_energy_per_atom"])),
      rel=1e-4)
  records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
  assert [r["material_id"] for r in records] == dataset.material_ids(np.arange(len(dataset)))
  assert records[0]["crystal_system"]["prediction"] == constants.CRYSTAL_SYSTEMS[
      int(api["crystal_system"][0].argmax())]
  for name in ("confusion_crystal_system.png", "parity_formation_energy_per_atom.png"):
    assert (out / name).stat().st_size > 0
  with pytest.raises(SystemExit, match="cannot open split"):
    evaluate.main([f"--workdir={workdir}", f"--data={tmp_path / 'nothing'}",
                   f"--output={tmp_path / 'x'}"])
