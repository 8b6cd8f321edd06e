"""Data-parallel correctness on 8 fake CPU devices (run in a subprocess: device count is fixed at start)."""

import json
import os
import subprocess
import sys

import pytest
from float32_tolerance import RTOL

HELPER = os.path.join(os.path.dirname(__file__), "helpers", "sharded_step_check.py")


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, HELPER], capture_output=True, text=True, env=env,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("run", ["supervised", "mxm_contrastive_fsdp"])
def test_eight_devices_match_one(results, run):
  r = results[run]
  assert r["loss_1"] == pytest.approx(r["loss_8"], rel=RTOL)   # sums in another order
  assert r["max_param_diff"] <= 1e-5 * max(1.0, r["param_scale"])


def test_contrastive_loss_over_global_batch_matches_numpy(results):
  r = results["contrastive"]
  assert r["jax"] == pytest.approx(r["numpy"], rel=RTOL)
  assert r["acc_jax"] == pytest.approx(r["acc_numpy"])
