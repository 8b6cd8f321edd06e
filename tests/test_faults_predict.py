"""Faults of the predict path: bad CSV rows, questionable formulas, report permissions, coverage.

Each test reproduces a failure of the old code: a batch with one bad row predicted nothing and
did not name the CSV line; "Fe0O3" and "Og2O3" were predicted; the report folder was created
0700 by mkdtemp. The model tests reuse the e2e module's tiny `:runlocal` workdir fixture.
"""

import os
import re
import stat

import numpy as np
import pytest

from xxact_jax.inference import inputs
from xxact_jax.report import __main__ as report_cli

from test_inference_e2e import check_prediction
from test_inference_e2e import fixture
from test_inference_e2e import run_predict


def error_lines(text):
  return [line for line in text.splitlines() if line.startswith("error:")]


# Formulas (no model needed).

@pytest.mark.parametrize("value, message", [
    ("Fe0O3", r"Bad formula 'Fe0O3': zero amount of Fe; every element needs a positive amount"),
    ("Fe2(SO4)0", r"'Fe2\(SO4\)0': zero amount of S, O"),
    ({"Fe": 0, "O": 3}, r"zero, negative or non-finite amount of Fe"),
    ({"Fe": -1, "O": 3}, r"zero, negative or non-finite amount of Fe"),
    ("Og2O3", r"Bad formula 'Og2O3': element Og \(Z=118\) is not supported by the model, "
              r"which knows H–Pu \(Z 1–94\)"),
    ({"Am": 1, "O": 2}, r"element Am \(Z=95\) is not supported"),
])
def test_zero_amounts_and_unsupported_elements_are_refused(value, message):
  with pytest.raises(ValueError, match=message):
    inputs.encode(value, 10)


def test_supported_edge_and_fractional_amounts_still_encode():
  species, fractions = inputs.encode("Pu2O3", 10)        # Pu (Z 94) is the last supported
  assert list(species[:2]) == [8, 94]
  species, fractions = inputs.encode("Li0.5CoO2", 10)    # "0.5" is not a zero amount
  assert fractions[:3].sum() == pytest.approx(1.0)


# The Python API and the single-input CLI.

@pytest.mark.slow
def test_api_refuses_questionable_formulas(predictor):
  for formula, message in (("Fe0O3", "zero amount of Fe"), ("Og2O3", "Og.*not supported")):
    with pytest.raises(ValueError, match=f"{re.escape(formula)}.*{message}"):
      predictor.predict(formula=formula, xrd=fixture("Si_CuKa.xy"))
    with pytest.raises(ValueError, match=message):
      predictor.predict(formula, fixture("Si_CuKa.xy"))
  with pytest.warns(UserWarning, match="marked unmeasured"):
    check_prediction(predictor.predict(formula="Si", xrd=fixture("Si_CuKa.xy")))


@pytest.mark.slow
@pytest.mark.parametrize("formula, message", [
    ("Fe0O3", r"'Fe0O3': zero amount of Fe"),
    ("Og2O3", r"'Og2O3': element Og \(Z=118\) is not supported .* H–Pu \(Z 1–94\)"),
])
def test_cli_refuses_questionable_formulas(workdir, tmp_path, capsys, formula,
                                           message):
  code, records = run_predict([f"--workdir={workdir}", f"--formula={formula}",
                               f"--xrd={fixture('NaCl_CuKa.csv')}"], tmp_path)
  assert code == 2 and records is None
  errors = error_lines(capsys.readouterr().err)
  assert len(errors) == 1 and re.search(message, errors[0]), errors


# Batch mode: every good row predicted, every bad one named by its CSV line.

@pytest.mark.slow
def test_batch_predicts_good_rows_and_names_each_bad_line(workdir, predictor, tmp_path,
                                                          capsys):
  nan_scan = tmp_path / "nan.xy"
  lines = open(fixture("Si_CuKa.xy")).read().splitlines()
  lines[39] = "10.7400 nan"
  nan_scan.write_text("\n".join(lines) + "\n")
  table = tmp_path / "rows.csv"
  table.write_text(
      "id,formula,xrd_file,wavelength\n"
      f"si,Si,{fixture('Si_CuKa.xy')},\n"                 # line 2: good
      "gone,Si,missing.xy,\n"                             # 3: no such file
      f"zero,Fe0O3,{fixture('NaCl_CuKa.csv')},\n"         # 4: zero amount
      f"copper,NaCl,{fixture('NaCl_CuKa.csv')},copper\n"  # 5: bad wavelength
      "nan,Si,nan.xy,\n"                                  # 6: NaN in the pattern
      f"og,Og2O3,{fixture('NaCl_CuKa.csv')},\n"           # 7: unsupported element
      f"nacl,NaCl,{fixture('NaCl_CuKa.csv')},Cu\n"        # 8: good
      "empty,NaCl,,\n")                                   # 9: empty xrd_file
  code, records = run_predict([f"--workdir={workdir}", f"--input={table}"], tmp_path)
  assert code == 1
  assert [r["id"] for r in records] == ["si", "gone", "zero", "copper", "nan", "og", "nacl",
                                        "empty"]
  assert [r["line"] for r in records] == list(range(2, 10))
  expected = {
      3: r"rows\.csv, line 3: .*missing\.xy: no such file",
      4: r"rows\.csv, line 4, field 'formula': Bad formula 'Fe0O3': zero amount of Fe",
      5: r"rows\.csv, line 5, field 'wavelength': .*copper",
      6: r"rows\.csv, line 6: .*nan\.xy, line 40, field 'intensity': intensity is nan",
      7: r"rows\.csv, line 7, field 'formula': .*Og \(Z=118\) is not supported",
      9: r"rows\.csv, line 9, field 'xrd_file': is empty",
  }
  for record in records:
    if record["line"] in expected:
      assert re.search(expected[record["line"]], record["error"]), record
      assert "formation_energy_per_atom" not in record
    else:
      assert "error" not in record
      check_prediction(record)
  # The good rows get what they get alone.
  with pytest.warns(UserWarning):
    alone = predictor.predict("NaCl", fixture("NaCl_CuKa.csv"), "Cu")
  assert records[6]["band_gap"]["value"] == pytest.approx(alone["band_gap"]["value"],
                                                          rel=1e-5, abs=1e-6)
  errors = error_lines(capsys.readouterr().err)
  assert len(errors) == 7
  for line, message in zip(sorted(expected), errors):
    assert re.search(expected[line], message), message
  assert errors[-1] == "error: 6 of 8 rows failed (lines 3, 4, 5, 6, 7, 9); 2 predicted"


@pytest.mark.slow
def test_batch_with_every_row_bad_writes_the_errors(workdir, tmp_path, capsys):
  table = tmp_path / "bad.csv"
  table.write_text("formula,xrd_file\nQq,a.xy\nSi,b.xy\n")
  code, records = run_predict([f"--workdir={workdir}", f"--input={table}"], tmp_path)
  assert code == 1 and [r["line"] for r in records] == [2, 3]
  assert "'Qq'" in records[0]["error"] and "b.xy: no such file" in records[1]["error"]
  assert error_lines(capsys.readouterr().err)[-1] == (
      "error: 2 of 2 rows failed (lines 2, 3); 0 predicted")


# Minimum 2θ coverage (resample.Preprocessing.min_coverage_deg, --min_coverage_deg).

@pytest.mark.slow
def test_narrow_scans_are_refused_unless_coverage_is_lowered(workdir, tmp_path, capsys):
  # 10 points over 0.17° (0.2 % of 5–90°): refused even at --min_coverage_deg=0, since a scan
  # also needs 50 points inside the grid (resample.MIN_POINTS).
  tiny = tmp_path / "tiny.xy"
  t = np.linspace(30.0, 30.17, 10)
  tiny.write_text("".join(f"{x:.4f} {1 + 50 * np.exp(-((x - 30.08) / 0.03) ** 2):.3f}\n"
                          for x in t))
  for extra in ([], ["--min_coverage_deg=0"]):
    code, records = run_predict([f"--workdir={workdir}", "--formula=Si", f"--xrd={tiny}",
                                 *extra], tmp_path)
    assert code == 2 and records is None
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and re.search(r"tiny\.xy: only 10 points", errors[0]), errors
  # 60 points over 1.2°: refused by the coverage floor (10°), accepted when it is lowered.
  narrow = tmp_path / "narrow.xy"
  t = np.arange(60) * 0.02 + 30.0
  narrow.write_text("".join(f"{x:.4f} {1 + 50 * np.exp(-((x - 30.6) / 0.05) ** 2):.3f}\n"
                            for x in t))
  code, records = run_predict([f"--workdir={workdir}", "--formula=Si", f"--xrd={narrow}"],
                              tmp_path)
  assert code == 2 and records is None
  errors = error_lines(capsys.readouterr().err)
  assert len(errors) == 1 and re.search(r"narrow\.xy: covers only 1\.2°.*at least 10°",
                                        errors[0]), errors
  code, records = run_predict([f"--workdir={workdir}", "--formula=Si", f"--xrd={narrow}",
                               "--min_coverage_deg=0"], tmp_path)
  assert code == 0
  check_prediction(records[0])


# The report folder.

@pytest.mark.slow
def test_report_files_get_ordinary_permissions(workdir, tmp_path):
  out = tmp_path / "report"
  previous = os.umask(0o022)
  try:
    assert report_cli.main([f"--workdir={workdir}", "--max_samples=32",
                            f"--output_dir={out}"]) == 0
  finally:
    os.umask(previous)
  assert stat.S_IMODE(out.stat().st_mode) == 0o755     # was 0700 (mkdtemp's staging folder)
  files = list(out.iterdir())
  assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)
