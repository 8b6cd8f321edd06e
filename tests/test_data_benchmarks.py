"""Smoke runs of the featurisation and loader benchmarks (their --smoke modes)."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(name, *args):
  result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_featurize_benchmark_smoke():
  out = run_benchmark("featurize.py", "--smoke")
  result = ast.literal_eval(out.strip().splitlines()[-1])
  assert result["structures"] == 10
  timings = result["ms_per_structure"]
  assert set(timings) == {"parse", "get_pattern", "smear", "symmetry", "composition", "write"}
  assert all(v > 0 for v in timings.values())
  assert result["get_pattern_alone_per_s"] > result["full_pipeline_per_s_one_core"] > 0


def test_loader_benchmark_smoke(embedded_dataset):
  del embedded_dataset  # built once by the fixture, so the subprocess finds it cached
  out = run_benchmark("loader.py", "--smoke")
  rows = [line for line in out.splitlines() if line.startswith("| ") and "samples/s" not in line]
  assert [r.split("|")[1].strip() for r in rows] == [
      "read_batch (random rows, no Grain)", "Grain loader, worker_count=0"]
  assert all(float(r.split("|")[2]) > 0 for r in rows)
