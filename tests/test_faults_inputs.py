"""Faults of the predict and evaluate inputs and outputs (issue 30): each test reproduces a
failure of the old code and checks what replaced it. Most need no model; the others reuse the
session's trained `:runlocal` workdir."""

import json
import os
import re

import numpy as np
import pytest

from xxact_jax import evaluate as evaluate_cli
from xxact_jax import predict as predict_cli
from xxact_jax.inference import answers
from xxact_jax.inference import identification

from test_inference_e2e import fixture
from test_reference import database  # noqa: F401  pylint: disable=unused-import  (a fixture)


def error_lines(text):
  return [line for line in text.splitlines() if line.startswith("error:")]


# Fault 8: outputs are checked before the work.

def test_predict_refuses_an_output_in_a_missing_folder_before_any_work(tmp_path, capsys):
  table = tmp_path / "rows.csv"
  table.write_text(f"formula,xrd_file\nSi,{fixture('Si_CuKa.xy')}\n")
  # The workdir does not exist either: the output is checked first, so its error comes out.
  code = predict_cli.main([f"--workdir={tmp_path / 'no_workdir'}", f"--input={table}",
                           f"--output={tmp_path / 'missing_dir' / 'p.jsonl'}"])
  assert code == 2
  errors = error_lines(capsys.readouterr().err)
  assert len(errors) == 1 and re.search(r"missing_dir/p\.jsonl: --output: its folder .*"
                                        r"missing_dir does not exist", errors[0]), errors
  code = predict_cli.main([f"--workdir={tmp_path / 'no_workdir'}", f"--input={table}",
                           f"--output={tmp_path}"])
  assert code == 2 and "--output: is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["measured", "data"])
def test_evaluate_refuses_an_output_that_is_a_file_before_any_work(tmp_path, mode):
  taken = tmp_path / "results"
  taken.write_text("not a folder\n")
  source = (f"--measured={tmp_path / 'index.csv'}" if mode == "measured"
            else f"--data={tmp_path / 'dataset'}")
  with pytest.raises(SystemExit, match=r"results: --output: exists and is not a folder"):
    evaluate_cli.main([f"--workdir={tmp_path / 'no_workdir'}", source, f"--output={taken}"])
  with pytest.raises(SystemExit, match=r"results.*is a file, so the folder cannot be made"):
    evaluate_cli.main([f"--workdir={tmp_path / 'no_workdir'}", source,
                       f"--output={taken / 'sub'}"])


# Fault 3: subnormal intensities are refused; NaN never reaches the JSON output.

def _scaled_scan(tmp_path, factor, name="tiny_counts.xy"):
  """Si_CuKa.xy with its intensities multiplied by `factor`, written as text."""
  from xxact_jax.inference import patterns  # pylint: disable=g-import-not-at-top
  scan = patterns.read_pattern(fixture("Si_CuKa.xy"))
  path = tmp_path / name
  path.write_text("".join(f"{t:.4f} {float(i) * factor!r}\n"
                          for t, i in zip(scan.two_theta, scan.intensity)))
  return path


@pytest.mark.parametrize("factor", [1e-320, 1e-310])
def test_subnormal_intensities_are_refused(tmp_path, factor):
  from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference.errors import PatternError  # pylint: disable=g-import-not-at-top
  path = _scaled_scan(tmp_path, factor)
  for background in resample.BACKGROUND_METHODS:
    with pytest.raises(PatternError, match=r"tiny_counts\.xy, field 'intensity': largest "
                                           r"intensity is .*e-3\d\d, below 1e-300"):
      inputs.pattern_on_grid(str(path), preprocessing=resample.Preprocessing(
          background=background, min_coverage_deg=0))
  grid = np.full(4250, factor)
  with pytest.raises(PatternError, match=r"<array>.*below 1e-300"):
    inputs.pattern_on_grid(grid)
  # A small but ordinary scale is still fine: only the shape matters.
  with pytest.warns(resample.PartialCoverageWarning):
    small = inputs.pattern_on_grid(str(_scaled_scan(tmp_path, 1e-200, "small.xy")))
  assert np.isfinite(small).all() and small.max() == pytest.approx(100.0)


def test_json_output_never_holds_nan():
  from xxact_jax.inference import outputs  # pylint: disable=g-import-not-at-top
  record = {"a": float("nan"), "b": [1.0, np.float32("inf")], "c": {"d": np.float64(2.0)}}
  text = outputs.dumps(record)
  assert json.loads(text, parse_constant=pytest.fail) == {"a": None, "b": [1.0, None],
                                                          "c": {"d": 2.0}}
  bad = outputs.non_finite_rows({"x": np.array([1.0, np.nan, 2.0]),
                                 "y": np.array([[0.5, 0.5], [0.5, 0.5], [np.inf, 0.0]])},
                                ("x", "y"))
  assert bad.tolist() == [False, True, True]


def _strict_json_lines(path):
  # parse_constant is called for NaN, Infinity and -Infinity only: none may appear.
  return [json.loads(line, parse_constant=pytest.fail) for line in open(path)]


@pytest.mark.slow
def test_predict_and_evaluate_refuse_subnormal_scans_and_nan_predictions(
    workdir, tmp_path, capsys, monkeypatch):
  tiny = _scaled_scan(tmp_path, 1e-320)
  table = tmp_path / "rows.csv"
  table.write_text(f"formula,xrd_file\nSi,{tiny}\nSi,{fixture('Si_CuKa.xy')}\n")
  output = tmp_path / "p.jsonl"
  assert predict_cli.main([f"--workdir={workdir}", f"--input={table}",
                           f"--output={output}"]) == 1
  records = _strict_json_lines(output)
  assert re.search(r"tiny_counts\.xy, field 'intensity': largest intensity", records[0]["error"])
  assert "error" not in records[1]
  # An index with the same two scans: the subnormal one is skipped, not scored.
  index = tmp_path / "index.csv"
  index.write_text(f"file,formula,crystal_system\n{tiny},Si,cubic\n"
                   f"{fixture('Si_CuKa.xy')},Si,cubic\n")
  metrics = evaluate_cli.evaluate_measured(workdir, str(index), str(tmp_path / "eval"))
  assert metrics["scans_evaluated"] == 1 and metrics["scans_failed"] == 1
  assert "largest intensity" in capsys.readouterr().err
  # Should a model still answer NaN, the row becomes an error instead of a bare NaN.
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  original = predictor_lib.Predictor.predict_arrays

  def nan_first_row(self, *args, **kwargs):
    out = original(self, *args, **kwargs)
    out["band_gap"] = out["band_gap"].copy()
    out["band_gap"][0] = np.nan
    return out

  monkeypatch.setattr(predictor_lib.Predictor, "predict_arrays", nan_first_row)
  table.write_text(f"formula,xrd_file\nSi,{fixture('Si_CuKa.xy')}\n"
                   f"NaCl,{fixture('NaCl_CuKa.csv')}\n")
  assert predict_cli.main([f"--workdir={workdir}", f"--input={table}",
                           f"--output={output}"]) == 1
  records = _strict_json_lines(output)
  assert "prediction is not finite" in records[0]["error"] and "error" not in records[1]
  index.write_text(f"file,formula,crystal_system\n{fixture('Si_CuKa.xy')},Si,cubic\n"
                   f"{fixture('NaCl_CuKa.csv')},NaCl,cubic\n")
  metrics = evaluate_cli.evaluate_measured(workdir, str(index), str(tmp_path / "eval2"))
  assert metrics["scans_evaluated"] == 1 and metrics["scans_failed"] == 1
  _strict_json_lines(tmp_path / "eval2" / "predictions.jsonl")


# Fault 9: evaluate --measured index rows that tracebacked.

def _index(tmp_path, body: bytes, name="index.csv"):
  path = tmp_path / name
  path.write_bytes(b"file,formula,wavelength_angstrom,crystal_system,spacegroup_number\n" + body)
  return str(path)


def test_index_space_group_must_be_ascii_digits(tmp_path):
  from xxact_jax.inference.errors import InputError  # pylint: disable=g-import-not-at-top
  path = _index(tmp_path, "a.xy,Si,,cubic,227\nb.xy,Si,,cubic,²\n".encode())
  with pytest.raises(InputError, match=r"index\.csv, line 3, field 'spacegroup_number': space "
                                       r"group '²' is not in 1–230"):
    evaluate_cli.read_index(path)


class _FormulaOnlyPredictor:
  """Stands in for a Predictor in load_inputs: checks the formula as the real one does."""

  def prepare_and_parse(self, formula, path, wavelength):
    from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
    del wavelength
    return inputs.encode(formula, 10), path


def test_index_bad_byte_and_bad_formula_fail_their_row_only(tmp_path):
  path = _index(tmp_path, b"a.xy,Si,,cubic,227\n"
                          b"b\xff.xy,Si,,cubic,227\n"       # line 3: not UTF-8
                          b"c.xy,Og2O3,,cubic,\n"           # line 4: element beyond Pu
                          b"d.xy,NaCl,1.5406,cubic,225\n")
  rows = evaluate_cli.read_index(path)
  assert [r["line"] for r in rows] == [2, 3, 4, 5]
  assert re.search(r"index\.csv, line 3, field 'file': is not valid UTF-8 \(byte 0xff\)",
                   rows[1]["error"])
  arrays, kept, failed = evaluate_cli.load_inputs(_FormulaOnlyPredictor(), rows)
  assert [r["line"] for r in kept] == [2, 5] and len(arrays) == 2
  reasons = {row["line"]: reason for row, reason in failed}
  assert set(reasons) == {3, 4}
  assert re.search(r"index\.csv, line 4, field 'formula': .*Og \(Z=118\) is not supported",
                   reasons[4])
  json.dumps([r["id"] for r in rows])   # readable ids (U+FFFD for the bad byte)


# Fault 10: non-UTF-8 bytes in CSV headers and rows.

def test_prepare_refuses_a_csv_header_with_a_bad_byte(tmp_path, fixtures_dir):
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from xxact_jax.data import readers  # pylint: disable=g-import-not-at-top
  table = pd.read_csv(os.path.join(fixtures_dir, "mp_small.csv.gz")).head(2)
  raw = table.to_csv(index=False).encode().replace(b"material_id", b"material_\xffid", 1)
  path = tmp_path / "header.csv"
  path.write_bytes(raw)
  with pytest.raises(ValueError, match=r"header\.csv.*header \(line 1\) is not valid UTF-8: "
                                       r"byte 0xff in column 'material_\ufffdid'"):
    list(readers.iter_records(str(path)))


def test_predict_input_names_the_line_of_a_bad_byte(tmp_path):
  from xxact_jax.inference.errors import InputError  # pylint: disable=g-import-not-at-top
  path = tmp_path / "rows.csv"
  path.write_bytes(b"id,formula,xrd_file\none,Si,a.xy\ntwo,S\xe9,b.xy\nthree,NaCl,c.xy\n")
  samples = predict_cli.samples_from_csv(str(path), keep_bad_rows=True)
  assert [s.source["line"] for s in samples] == [2, 3, 4]
  assert [s.error is None for s in samples] == [True, False, True]
  assert re.search(r"rows\.csv, line 3, field 'formula': is not valid UTF-8 \(byte 0xe9\)",
                   str(samples[1].error))
  with pytest.raises(InputError, match=r"rows\.csv, line 3, field 'formula'"):
    predict_cli.samples_from_csv(str(path))
  path.write_bytes(b"id,form\xe9ula,xrd_file\none,Si,a.xy\n")
  with pytest.raises(InputError, match=r"rows\.csv, line 1: header is not valid UTF-8 "
                                       r"\(byte 0xe9 in column 'form\ufffdula'\)"):
    predict_cli.samples_from_csv(str(path), keep_bad_rows=True)


# Fault 5: an .xrdml file's wavelength fields are checked like --wavelength.

@pytest.mark.parametrize("field, value", [
    ("kAlpha1", "0"), ("kAlpha1", "NaN"), ("kAlpha1", "1e-9"), ("kAlpha1", "-1.540598"),
    ("kAlpha2", "0"), ("ratioKAlpha2KAlpha1", "-0.5"), ("ratioKAlpha2KAlpha1", "inf"),
])
def test_xrdml_wavelength_fields_are_checked(tmp_path, field, value):
  from xxact_jax.inference import patterns  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference.errors import PatternError  # pylint: disable=g-import-not-at-top
  text = open(fixture("TiO2_CuKa_list.xrdml")).read()
  text, count = re.subn(rf"(<{field}[^>]*>)[^<]*(</{field}>)", rf"\g<1>{value}\g<2>", text)
  assert count == 1
  path = tmp_path / "scan.xrdml"
  path.write_text(text)
  scan = patterns.read_pattern(str(path))
  with pytest.raises(PatternError, match=rf"scan\.xrdml, field '{field}': .*{field} is "
                                         r".*; give the wavelength explicitly"):
    resample.to_model_grid(scan)
  # An explicit wavelength takes the place of the file's, as it always did.
  with pytest.warns(resample.PartialCoverageWarning):
    assert resample.to_model_grid(scan, "Cu").max() == pytest.approx(100.0)


# Fault 4: large text scans are parsed by numpy, and beyond a stated size refused.

def test_large_text_scans_are_parsed_without_the_per_line_loop(tmp_path, monkeypatch):
  from xxact_jax.inference import patterns  # pylint: disable=g-import-not-at-top
  two_theta = np.linspace(5.0, 90.0, 300_001)
  intensity = 10 + 100 * np.exp(-((two_theta - 40.0) / 0.05) ** 2)
  path = tmp_path / "big.xy"
  with open(path, "w") as f:
    f.write("# a header line\n2theta intensity\n")
    np.savetxt(f, np.column_stack([two_theta, intensity]), fmt="%.5f")
  by_line = patterns._read_two_column_by_line  # pylint: disable=protected-access
  expected = by_line(path.read_text(), str(path))

  def slow(*args):
    raise AssertionError("the per-line reader was used for a clean file")

  monkeypatch.setattr(patterns, "_read_two_column_by_line", slow)
  scan = patterns.read_pattern(str(path))
  np.testing.assert_array_equal(scan.two_theta, expected.two_theta)
  np.testing.assert_array_equal(scan.intensity, expected.intensity)


@pytest.mark.parametrize("name", ["Si_CuKa.xy", "NaCl_CuKa.csv", "NaCl_CuKa.xye"])
def test_fast_reader_agrees_with_the_per_line_reader(name, tmp_path):
  from xxact_jax.inference import patterns  # pylint: disable=g-import-not-at-top
  text = open(fixture(name)).read()
  lines = text.splitlines()
  first = next(i for i, line in enumerate(lines)
               if patterns._is_data_line(line))  # pylint: disable=protected-access
  descending = "\n".join(lines[:first] + lines[first:][::-1]) + "\n"
  for variant, body in (("plain", text), ("semicolons", text.replace(",", ";")),
                        ("descending", descending)):
    path = tmp_path / f"{variant}{os.path.splitext(name)[1]}"
    path.write_text(body)
    fast = patterns.read_pattern(str(path))
    slow = patterns._read_two_column_by_line(body, str(path))  # pylint: disable=protected-access
    np.testing.assert_array_equal(fast.two_theta, slow.two_theta)
    np.testing.assert_array_equal(fast.intensity, slow.intensity)


def test_pattern_files_beyond_the_size_limit_are_refused(tmp_path, monkeypatch):
  from xxact_jax.inference import patterns  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference.errors import PatternError  # pylint: disable=g-import-not-at-top
  huge = tmp_path / "huge.xy"
  with open(huge, "wb") as f:
    f.truncate(patterns.MAX_TEXT_BYTES + 1)    # sparse: no disk used, refused by its size
  with pytest.raises(PatternError, match=r"huge\.xy: 67 MB: is larger than 64 MB, the largest "
                                         r"pattern file read"):
    patterns.read_pattern(str(huge))
  # A compressed file is judged by its text, read no further than the limit.
  import gzip  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(patterns, "MAX_TEXT_BYTES", 1000)
  packed = tmp_path / "packed.xy.gz"
  with gzip.open(packed, "wt") as f:
    f.write("".join(f"{10 + 0.01 * i:.2f} {i % 7}\n" for i in range(500)))
  with pytest.raises(PatternError, match=r"packed\.xy\.gz: its text is larger than 0 MB"):
    patterns.read_pattern(str(packed))


# Fault 11: ensembles.

def test_an_ensemble_refuses_the_same_run_twice(tmp_path):
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference.errors import InputError  # pylint: disable=g-import-not-at-top
  run = tmp_path / "run"
  run.mkdir()
  (tmp_path / "alias").symlink_to(run)
  for given in (f"{run},{run}", [str(run), str(tmp_path / "alias")],
                f"{run},{tmp_path}/./run/"):
    with pytest.raises(InputError, match=r"given twice in the ensemble"):
      predictor_lib.load(given)
  assert predictor_lib.split_workdirs(f"{run},{tmp_path}") == [str(run), str(tmp_path)]


@pytest.mark.slow
def test_an_ensemble_takes_members_whose_targets_differ_in_order(workdir, predictor, tmp_path,
                                                                 monkeypatch):
  import shutil  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import model as model_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  original = model_lib.load

  def reordered(directory, *args):
    loaded = original(directory, *args)
    if directory == copy:   # as if trained with --config.targets in another order
      loaded.targets = tuple(reversed(loaded.targets))
    return loaded

  monkeypatch.setattr(model_lib, "load", reordered)
  ensemble = predictor_lib.load(f"{workdir},{copy}")
  models = ensemble.ensemble.models
  assert len(models) == 2 and models[1].targets != ensemble.targets
  with pytest.warns(UserWarning):
    alone = predictor.predict("NaCl", fixture("NaCl_CuKa.csv"))
  with pytest.warns(UserWarning):
    both = ensemble.predict("NaCl", fixture("NaCl_CuKa.csv"))
  assert both["band_gap"]["value"] == pytest.approx(alone["band_gap"]["value"], rel=1e-5)
  assert both["crystal_system"]["probabilities"] == pytest.approx(
      alone["crystal_system"]["probabilities"], rel=1e-5)


# Fault 6: the reference lookup does not answer garbage, and its probability follows its similarity.

def _garbage_scans(rng):
  from xxact_jax import constants  # pylint: disable=g-import-not-at-top
  grid = constants.two_theta_grid()
  peaks = lambda centres: np.exp(-0.5 * ((grid[:, None] - np.asarray(centres)[None]) / 0.1)
                                 ** 2).sum(-1)
  return grid, {"flat": 50 + rng.normal(0, 1, grid.size),
                "noise": rng.uniform(0, 100, grid.size),
                "comb": 1 + 100 * peaks(np.arange(10, 88, 1.5)),
                "one_peak": 1 + 100 * peaks([38.0])}


def _for_lookup(two_theta, intensity):
  """A scan as Predictor.match hands it to the lookup (SNIP background removal)."""
  import warnings  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return inputs.pattern_on_grid((two_theta, intensity), None,
                                  resample.Preprocessing(background="snip"))


def test_reference_lookup_declines_garbage_and_weighs_its_answers(database):  # noqa: F811
  from test_reference import _composition, _rutile, _scan  # pylint: disable=g-import-not-at-top
  grid, garbage = _garbage_scans(np.random.default_rng(0))
  for formula in ("TiO2", "NaCl"):
    for name, intensity in garbage.items():
      match = database.match(*_composition(formula), _for_lookup(grid, intensity))
      assert not match.answered, (formula, name, match.similarity)
      assert match.weight == 0.0
      record = answers.match_json(match)
      assert record["answered"] is False and "does not answer" in record["note"]
  match = database.match(*_composition("TiO2"), _scan(_rutile(), strain=0.01, background=5))
  assert match.answered and match.material_id == "rutile"
  assert 0.5 < match.weight < 1.0
  assert answers.match_json(match)["probability"] == round(match.weight, 4)
  # The model's probabilities share what the reference leaves; its class stays the answer.
  model = np.full(7, 1 / 7)
  mixed = identification.override(model, match.crystal_system, match.weight)
  assert mixed.sum() == pytest.approx(1.0) and mixed.argmax() == match.crystal_system
  assert mixed.max() == pytest.approx(match.weight + (1 - match.weight) / 7)
  outputs = {"crystal_system": np.full(7, 1 / 7, np.float32)}
  declined = database.match(*_composition("TiO2"), _for_lookup(grid, garbage["flat"]))
  result = answers.identified_prediction(outputs, ("crystal_system",),
                                         identification.Identification(declined))
  model = answers.format_prediction(outputs, ("crystal_system",))
  assert result["crystal_system"] == model["crystal_system"]     # the model answers
  assert result["reference"]["answered"] is False


@pytest.mark.slow
def test_predict_and_evaluate_say_when_the_reference_does_not_answer(workdir, predictor,
                                                                     tmp_path):
  known = predictor.reference
  row = 0
  rows = known._dataset  # pylint: disable=protected-access
  species = rows.read_batch(np.array([row]), ("species", "fractions", "xrd"))
  from xxact_jax import constants  # pylint: disable=g-import-not-at-top
  formula = "".join(f"{constants.ELEMENTS[z - 1]}{f:.4f}"
                    for z, f in zip(species["species"][0], species["fractions"][0]) if z)
  grid = constants.two_theta_grid()
  own = tmp_path / "own.xy"
  np.savetxt(own, np.column_stack([grid, species["xrd"][0].astype(np.float64) + 1.0]))
  _, garbage = _garbage_scans(np.random.default_rng(1))
  flat = tmp_path / "flat.xy"
  np.savetxt(flat, np.column_stack([grid, garbage["noise"]]))
  table = tmp_path / "rows.csv"
  table.write_text(f"formula,xrd_file\n{formula},{own}\n{formula},{flat}\n")
  output = tmp_path / "p.jsonl"
  assert predict_cli.main([f"--workdir={workdir}", f"--input={table}",
                           f"--output={output}"]) == 0
  mine, noise = [json.loads(line) for line in output.read_text().splitlines()]
  assert mine["reference"]["answered"] is True and mine["reference"]["similarity"] > 0.9
  probabilities = mine["crystal_system"]["probabilities"]
  assert mine["crystal_system"]["source"] == "reference"
  assert 0.5 < max(probabilities.values()) < 1.0
  assert max(probabilities.values()) == pytest.approx(mine["reference"]["probability"] + (
      1 - mine["reference"]["probability"]) * mine["crystal_system"]["model_probabilities"][
          mine["reference"]["crystal_system"]], abs=1e-4)
  assert noise["reference"]["answered"] is False and "does not answer" in noise["reference"]["note"]
  assert noise["crystal_system"].get("source") != "reference"
  # evaluate gives the same probabilities for the same scans.
  index = tmp_path / "index.csv"
  index.write_text(f"file,formula,crystal_system\n{own},{formula},cubic\n{flat},{formula},cubic\n")
  metrics = evaluate_cli.evaluate_measured(workdir, str(index), str(tmp_path / "eval"))
  assert metrics["reference"]["matched"] == 1 and metrics["reference"]["declined"] == 1
  records = [json.loads(line) for line in open(tmp_path / "eval" / "predictions.jsonl")]
  for record, predicted in zip(records, (mine, noise)):
    assert record["crystal_system_probabilities"] == pytest.approx(
        predicted["crystal_system"]["probabilities"], abs=1e-6)


# Frictions: the assumed wavelength, one CSV schema, indexing that found nothing, one warning each,
# defaults in --help, where evaluate wrote.

def test_predict_reads_the_evaluate_index_and_evaluate_the_predict_csv(tmp_path):
  from xxact_jax.inference.errors import InputError  # pylint: disable=g-import-not-at-top
  index = tmp_path / "index.csv"
  index.write_text("id,file,formula,wavelength_angstrom,crystal_system\n"
                   "a,a.xy,Si,1.5406,cubic\nb,b.xy,NaCl,,cubic\n")
  samples = predict_cli.samples_from_csv(str(index))
  assert [s.xrd for s in samples] == [str(tmp_path / "a.xy"), str(tmp_path / "b.xy")]
  assert [s.wavelength for s in samples] == ["1.5406", None]
  table = tmp_path / "rows.csv"
  table.write_text("formula,xrd_file,wavelength,crystal_system\nSi,a.xy,Mo,cubic\n")
  (row,) = evaluate_cli.read_index(str(table))
  assert row["path"] == str(tmp_path / "a.xy") and row["wavelength"] == pytest.approx(0.71073)
  both = tmp_path / "both.csv"
  both.write_text("formula,xrd_file,file,crystal_system\nSi,a.xy,b.xy,cubic\n")
  with pytest.raises(InputError, match=r"both\.csv, line 1: has both columns 'xrd_file' and "
                                       r"'file'"):
    predict_cli.samples_from_csv(str(both))


def test_help_shows_the_defaults(capsys):
  for cli in (predict_cli, evaluate_cli):
    with pytest.raises(SystemExit):
      cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: '10.0')" in text and "(default: 'none')" in text
    assert "(default: 'None')" not in text


@pytest.mark.slow
def test_assumed_wavelength_and_empty_indexing_are_said_once(workdir, tmp_path, capsys):
  import warnings  # pylint: disable=g-import-not-at-top
  output = tmp_path / "p.jsonl"
  # Si_CuKa.xy states no wavelength and covers 10–80°; NaCl_CuKa.csv gets an explicit one.
  # Twelve lines at random angles index to no lattice.
  grid = np.arange(10, 80, 0.02)
  centres = np.random.default_rng(3).uniform(15, 75, 12)
  random_lines = tmp_path / "random_lines.xy"
  np.savetxt(random_lines, np.column_stack([grid, 1 + 100 * np.exp(
      -0.5 * ((grid[:, None] - centres[None]) / 0.08) ** 2).sum(-1)]))
  table = tmp_path / "rows.csv"
  table.write_text(f"formula,xrd_file,wavelength\nSi,{fixture('Si_CuKa.xy')},\n"
                   f"NaCl,{fixture('NaCl_CuKa.csv')},Cu\n")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert predict_cli.main([f"--workdir={workdir}", f"--input={table}", "--reference=none",
                             f"--output={output}"]) == 0
  raw = [w for w in caught if "unmeasured" in str(w.message) or "assumed" in str(w.message)]
  assert not raw, [str(w.message) for w in raw]      # printed once each, as "warning: ..."
  err = capsys.readouterr().err
  assert err.count("marked unmeasured") == 2          # one per scan, NaCl_CuKa.csv covers 10–80°
  assert err.count("Si_CuKa.xy: no wavelength given or stated in the file; Cu Kα") == 1
  si, nacl = [json.loads(line) for line in output.read_text().splitlines()]
  assert si["wavelength_assumed_angstrom"] == pytest.approx(1.5418, abs=1e-3)
  assert "wavelength_assumed_angstrom" not in nacl
  for record in (si, nacl):
    assert ("indexing" in record) != ("indexing_note" in record)
  # A scan no lattice indexes says so.
  table.write_text(f"formula,xrd_file,wavelength\nSi,{random_lines},Cu\n")
  assert predict_cli.main([f"--workdir={workdir}", f"--input={table}", "--reference=none",
                           f"--output={output}"]) == 0
  (record,) = [json.loads(line) for line in output.read_text().splitlines()]
  assert "indexing" not in record and record["indexing_note"] == answers.NONE_FOUND
  assert predict_cli.main([f"--workdir={workdir}", f"--input={table}", "--reference=none",
                           "--noindexing", f"--output={output}"]) == 0
  assert "indexing_note" not in json.loads(output.read_text())
  # evaluate: the same scan without a wavelength, said the same way; where it wrote.
  index = tmp_path / "index.csv"
  index.write_text(f"file,formula,crystal_system\n{fixture('Si_CuKa.xy')},Si,cubic\n")
  capsys.readouterr()
  evaluate_cli.main([f"--workdir={workdir}", f"--measured={index}", "--reference=none",
                     f"--output={tmp_path / 'eval'}"])
  err = capsys.readouterr().err
  assert "Si_CuKa.xy: no wavelength given" in err
  assert f"evaluate: wrote confusion_crystal_system.png, metrics.json, predictions.jsonl, " \
         f"risk_coverage.png to {tmp_path / 'eval'}" in err
  (evaluated,) = [json.loads(line) for line in open(tmp_path / "eval" / "predictions.jsonl")]
  assert evaluated["wavelength_assumed_angstrom"] == si["wavelength_assumed_angstrom"]
  assert evaluated["crystal_system_probabilities"] == pytest.approx(
      si["crystal_system"]["probabilities"], abs=1e-6)
