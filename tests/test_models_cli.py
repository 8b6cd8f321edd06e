"""`python -m xxact_jax.models --config=...`: the parameter table and its JSON last line."""

import json
import os
import subprocess
import sys

import pytest

from xxact_jax.models import model_config
from xxact_jax.models import parameter_count

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)


def run_cli(config_arg, *flags):
  result = subprocess.run(
      [sys.executable, "-m", "xxact_jax.models", f"--config={config_arg}", *flags],
      capture_output=True, text=True, cwd=REPO_DIR, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()


@pytest.mark.parametrize("name,flags", [("xxact", ("--parameters",)), ("pxrd_fcn_mlp", ())])
def test_cli_prints_counts_and_flops_as_json(name, flags):
  lines = run_cli(os.path.join(TESTS_DIR, "models_tiny_config.py") + f":{name}", *flags)
  report = json.loads(lines[-1])
  cfg = model_config(name, "tiny")
  expected = parameter_count.parameter_counts(parameter_count.abstract_params(cfg))
  assert {k: report[k] for k in expected} == expected
  assert report["total"] == sum(report[k] for k in parameter_count.COMPONENTS)
  assert report["forward_flops_per_sample"] > 2 * 0.5 * report["total"]  # at least ~1 MAC/param
  table = "\n".join(lines[:-1])
  for component in parameter_count.COMPONENTS:
    assert f"{expected[component]:,}" in table
  # --parameters: one row per parameter array, and the same total.
  assert ("fusion/" in table and "| Shape" in table) == bool(flags)
  if flags:
    assert f"Total: {report['total']:,}" in table


def test_cli_needs_a_config():
  result = subprocess.run([sys.executable, "-m", "xxact_jax.models"], capture_output=True,
                          text=True, cwd=REPO_DIR, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode != 0
  assert "--config" in result.stderr
