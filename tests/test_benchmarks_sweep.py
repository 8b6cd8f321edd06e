"""benchmarks/sweep.py: the table, resuming from its results file, and a tiny run on this CPU."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position


def _record(variant, rate, config="configs/supervised.py", ok=True, batch=4096):
  if not ok:
    return {"config": config, "variant": variant, "per_device_batch": batch, "ok": False,
            "error": "RuntimeError: out of memory."}
  return {"config": config, "variant": variant, "per_device_batch": batch, "ok": True,
          "result": {"per_device_batch": batch, "compile_seconds": 30.0,
                     "peak_device_memory_bytes": 20e9, "xla_memory_estimate_bytes": 19e9,
                     "synthetic": {"samples_per_s_per_device": rate, "mfu": 0.4}}}


def test_table_compares_each_variant_with_its_own_baseline():
  runs = [_record("baseline", 30_000), _record("dropout_bits8", 33_000),
          _record("baseline", 20_000, config="configs/mxm_contrastive.py"),
          _record("remat", 15_000, config="configs/mxm_contrastive.py"),
          _record("remat", None, ok=False)]
  lines = sweep.table(runs).splitlines()
  rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines[2:]}
  assert "| 33,000 | 1.100 | 40.0% |" in rows[("`configs/supervised.py`", "dropout_bits8")]
  assert "| 15,000 | 0.750 |" in rows[("`configs/mxm_contrastive.py`", "remat")]
  assert "failed: RuntimeError: out of memory" in rows[("`configs/supervised.py`", "remat")]
  # Baselines come first within a config.
  assert lines[2].split("|")[2].strip() == "baseline"


def test_the_median_run_counts_and_a_cut_line_is_skipped(tmp_path):
  path = str(tmp_path / "runs.jsonl")
  for rate in (10_000, 14_000, 12_000):
    sweep.append_run(path, _record("baseline", rate))
  sweep.append_run(path, _record("remat", 6_000))
  sweep.append_run(path, _record("remat", None, ok=False))   # a later failure does not hide it
  with open(path, "a") as f:
    f.write('{"config": "configs/supervised.py", "vari')     # killed mid-write
  runs = sweep.read_runs(path)
  assert len(runs) == 5
  text = sweep.table(runs)
  assert "| baseline | 4096 | 3 | 12,000 | 1.000 |" in text
  assert "| remat | 4096 | 1 | 6,000 | 0.500 |" in text


def test_rounds_alternate_the_order_and_resume_per_round():
  configs, variants = ["a.py"], ["baseline", "x", "y"]
  done = sweep.collections.Counter()
  plan = sweep.plan_runs(configs, variants, 3, done, 8, rerun=False)
  assert [v for _, v in plan] == ["baseline", "x", "y", "y", "x", "baseline", "baseline", "x", "y"]
  done.update({sweep.run_key("a.py", "baseline", 8): 2, sweep.run_key("a.py", "x", 8): 1})
  plan = sweep.plan_runs(configs, variants, 3, done, 8, rerun=False)
  assert [v for _, v in plan] == ["y", "y", "x", "baseline", "x", "y"]
  assert len(sweep.plan_runs(configs, variants, 1, done, 8, rerun=True)) == 3


def test_custom_variants_parse_and_bad_ones_are_clear_errors():
  custom = sweep.parse_custom(["fast=--config.model.dropout_bits=8;--config.model.remat=True"])
  assert custom["fast"][0] == ("--config.model.dropout_bits=8", "--config.model.remat=True")
  with pytest.raises(ValueError, match="NAME=FLAG"):
    sweep.parse_custom(["fast"])
  with pytest.raises(ValueError, match="built-in"):
    sweep.parse_custom(["baseline=--config.seed=1"])


def test_every_built_in_variant_names_config_fields_that_exist():
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  config = defaults.load_config_file(os.path.join(ROOT, "configs", "supervised.py"), "runlocal")
  for name, (flags, _) in sweep.VARIANTS.items():
    for flag in flags:
      path, _, _ = flag.removeprefix("--config.").partition("=")
      node = config
      for part in path.split("."):
        assert part in node, (name, flag)
        node = node[part]


@pytest.mark.slow
def test_tiny_sweep_precompiles_runs_records_failures_and_resumes(tmp_path):
  out = str(tmp_path / "sweep.jsonl")
  # Its own cache: the precompile phase fills it and the timed runs load from it.
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"))
  cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "sweep.py"),
         "--configs=configs/supervised.py:runlocal", "--variants=baseline",
         "--custom=fast=--config.model.dropout_bits=8;XXACT_SWEEP_TEST=1",
         "--custom=broken=--config.model.dropout_bits=4",
         "--precompile_jobs=2", "--per_device_batch=8", "--steps=2", "--repeats=1",
         "--warmup=1", f"--out={out}"]
  first = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
  assert first.returncode == 0, first.stderr[-3000:]
  runs = {r["variant"]: r for r in sweep.read_runs(out)}
  assert set(runs) == {"baseline", "fast", "broken"}
  assert runs["baseline"]["ok"] and runs["fast"]["ok"]
  # A variant that cannot compile is recorded with its error and not timed.
  assert not runs["broken"]["ok"] and "compile failed" in runs["broken"]["error"]
  assert "model.dropout_bits" in runs["broken"]["error"]
  fast = runs["fast"]
  assert fast["env"] == {"XXACT_SWEEP_TEST": "1"}
  assert fast["flags"] == ["--config.model.dropout_bits=8"]
  assert fast["cold_compile_seconds"] > 0
  assert fast["result"]["synthetic"]["samples_per_s_per_device"] > 0
  assert fast["result"]["per_device_batch"] == 8
  assert os.listdir(tmp_path / "cache")
  assert "| fast | 8 | 1 |" in first.stdout and "ETA" in first.stderr
  # A second call finds its run already in the file and does nothing.
  second = subprocess.run(cmd[:3] + ["--variants=baseline"] + cmd[6:], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "0 run(s) to do" in second.stderr
  assert len(sweep.read_runs(out)) == 3
  with open(out) as f:
    assert all(json.loads(line)["config"] == "configs/supervised.py:runlocal" for line in f)
