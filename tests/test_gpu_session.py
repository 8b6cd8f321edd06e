"""benchmarks/gpu_session.sh in its CPU dry run (DRY_RUN=1): the GPU runbook's stages, argument
handling and outputs on the tiny `:runlocal` model, so that the script cannot rot between the
rare sessions with a GPU; and benchmarks/gpu_preflight.py's verdicts."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_preflight  # pylint: disable=g-import-not-at-top,wrong-import-position
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_preflight_names_what_a_stage_lacks(tmp_path, capsys):
  out = tmp_path / "preflight.json"
  code = gpu_preflight.main(["--stages=setup,baseline,torch", f"--data={tmp_path}/none",
                             "--torch_ref=", f"--out={out}"])
  report = json.loads(out.read_text())
  assert code == 1
  assert {"data", "torch_ref"} <= set(report["missing_for_stages"])
  assert report["modules"]["grain"]["ok"] and report["modules"]["clu"]["needed_by"]
  assert "MISSING" in capsys.readouterr().out


def test_the_kernel_stage_sweeps_every_switch_and_all_together():
  assert set(sweep.KERNEL_VARIANTS) == {"baseline", "fused_attention", "fused_norm",
                                        "fused_bias_grad", "fused_all"}
  with open(os.path.join(ROOT, "benchmarks", "gpu_session.sh")) as f:
    script = f.read()
  assert ",".join(sweep.KERNEL_VARIANTS) in script


@pytest.mark.slow
def test_dry_run_runs_the_runbook_stages_on_the_cpu(tmp_path, embedded_dataset):
  out = tmp_path / "out"
  env = dict(os.environ, DRY_RUN="1", DEADLINE="900", DATA=embedded_dataset,
             JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
             KERNEL_ROUNDS="1", KERNEL_VARIANTS="baseline,fused_all")
  result = subprocess.run(["bash", "benchmarks/gpu_session.sh", "setup,kernels,hlo,torch,keepcache",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  log = (out / "session.log").read_text()
  assert "done" in log.splitlines()[-1] and "] skip " not in log, log   # no stage ran out of time
  preflight = json.loads((out / "preflight.json").read_text())
  assert preflight["backend"] == "cpu" and preflight["data"]["ok"]
  runs = sweep.read_runs(str(out / "kernels.jsonl"))
  assert {r["variant"]: r["ok"] for r in runs} == {"baseline": True, "fused_all": True}, runs
  fused = next(r for r in runs if r["variant"] == "fused_all")
  assert "--config.model.fused_attention=True" in fused["flags"]
  assert fused["result"]["per_device_batch"] == 8
  assert (out / "hlo.txt.gz").stat().st_size > 0
  assert "| fused_all | 8 | 1 |" in result.stdout
