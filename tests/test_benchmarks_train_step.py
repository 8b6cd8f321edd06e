"""Smoke runs of benchmarks/train_step.py on a tiny config: synthetic and loader-fed batches."""

import gzip
import json
import math
import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = ["--config=configs/supervised.py:runlocal", "--steps=2", "--repeats=1", "--warmup=1",
            "--per_device_batch=8"]
RATE_FIELDS = ("steps_per_s", "samples_per_s", "samples_per_s_per_device")


def run_benchmark(*args):
  env = dict(os.environ)
  # The tests' persistent compilation cache: the second run loads the step the first compiled.
  if jax.config.jax_compilation_cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"), *args],
                        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def result_of(process) -> dict:
  assert process.returncode == 0, process.stderr[-3000:]
  return json.loads(process.stdout.strip().splitlines()[-1])


def check_rates(figures: dict, result: dict, repeats: int = 1):
  for field in RATE_FIELDS:
    assert figures[field] > 0, field
  assert figures["samples_per_s"] == pytest.approx(result["global_batch"] * figures["steps_per_s"])
  assert figures["samples_per_s_per_device"] == pytest.approx(
      figures["samples_per_s"] / result["num_devices"])
  assert len(figures["seconds_per_repeat"]) == repeats
  assert all(s > 0 for s in figures["seconds_per_repeat"])
  assert math.isfinite(figures["final_loss"]) and figures["final_loss"] > 0
  assert figures["mfu"] is None  # no peak rate is known for a CPU


def check_common(result: dict, max_elements: int):
  assert result["model"] == "xxact" and result["objective"] == "supervised"
  assert result["global_batch"] == 8 * result["num_devices"] and result["per_device_batch"] == 8
  assert result["max_elements"] == max_elements
  assert result["num_params"] > 10_000
  assert result["compile_seconds"] > 0
  assert result["step_flops_per_device"] > 0
  assert result["flops_per_sample"] == pytest.approx(result["step_flops_per_device"] / 8)
  assert result["xla_memory_estimate_bytes"] > 0
  assert result["peak_flops_per_device"] is None and result["peak_device_memory_bytes"] is None
  assert result["device_kind"] and result["platform"] == "cpu"
  assert result["jax"] == jax.__version__


def test_synthetic_batches(tmp_path):
  process = run_benchmark(*TINY_RUN, f"--profile_dir={tmp_path}", "--profile_steps=2")
  result = result_of(process)
  assert result["profile_dir"] == str(tmp_path)
  traces = list(tmp_path.glob("plugins/profile/*/perfetto_trace.json.gz"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  check_common(result, max_elements=10)  # the default K
  check_rates(result["synthetic"], result)
  assert "data" not in result and "data_to_synthetic_ratio" not in result
  assert "samples/s/device" in process.stdout          # the human-readable summary
  assert "repeat 1/1" in process.stderr and "ETA" in process.stderr   # progress
  summary = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_summary.py"),
                            str(tmp_path), "--steps=2", "--top=5"],
                           capture_output=True, text=True, timeout=120)
  assert summary.returncode == 0, summary.stderr
  assert "| class | ms / step | share |" in summary.stdout
  assert "matmul" in summary.stdout and "kernel family" in summary.stdout


def test_compile_only_reports_the_compile_and_writes_the_program(tmp_path):
  hlo = tmp_path / "step.hlo.gz"
  process = run_benchmark(*TINY_RUN, "--compile_only", f"--dump_hlo={hlo}")
  result = result_of(process)
  assert result["compile_seconds"] > 0 and result["step_flops_per_device"] > 0
  assert "synthetic" not in result and "samples/s" not in process.stdout
  with gzip.open(hlo, "rt") as f:
    assert "HloModule" in f.read(2000)


def test_loader_fed_batches(embedded_dataset):
  result = result_of(run_benchmark(*TINY_RUN, f"--data={embedded_dataset}"))
  check_common(result, max_elements=10)  # the embedded dataset's max_elements
  check_rates(result["synthetic"], result)
  check_rates(result["data"], result)
  assert result["data_path"] == embedded_dataset
  assert result["data_to_synthetic_ratio"] == pytest.approx(
      result["data"]["samples_per_s"] / result["synthetic"]["samples_per_s"])


def test_a_directory_without_a_dataset_is_a_clear_error(tmp_path):
  process = run_benchmark(*TINY_RUN, f"--data={tmp_path}")
  assert process.returncode != 0
  assert str(tmp_path) in process.stderr and "prepare" in process.stderr
  assert "Traceback" not in process.stderr
