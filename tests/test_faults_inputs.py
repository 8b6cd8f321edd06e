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

from test_inference_e2e import fixture


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
