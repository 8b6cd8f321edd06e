"""One Orbax CheckpointManager keeps the newest steps and the best; earlier layouts still load."""

import os

import numpy as np
import orbax.checkpoint as ocp

from xxact_jax.training import checkpoints

EXTRA = {"config": {"model": {"name": "xxact"}}, "target_stats": {}}


def _state(step):
  return {"params": {"w": np.full(3, float(step), np.float32)}, "step": np.int32(step),
          "opt_state": {"mu": np.zeros(3, np.float32)}}


def test_one_manager_keeps_the_newest_and_the_best(tmp_path):
  workdir = str(tmp_path)
  losses = {2: 0.5, 4: 0.3, 6: 0.4}      # step 4 is the best, and not among the newest two
  saver = checkpoints.Checkpointer(workdir, keep=2, best_metric="eval/loss")
  try:
    for step in range(1, 7):
      metrics = {"eval/loss": losses[step], "eval/other": 9.0} if step in losses else None
      saver.save(step, _state(step), {"position": step}, EXTRA, metrics)
    saver.wait()
  finally:
    saver.close()
  directory = os.path.join(workdir, checkpoints.LATEST_DIR)
  assert sorted(int(s) for s in os.listdir(directory)) == [4, 5, 6]
  assert not os.path.exists(os.path.join(workdir, checkpoints.BEST_DIR))
  assert checkpoints.tracked_best_step(directory) == 4
  best = checkpoints.restore_checkpoint(workdir, "best")
  assert best.step == 4 and float(best.params["w"][0]) == 4.0
  assert checkpoints.restore_checkpoint(workdir, "latest").step == 6
  for step in (4, 5, 6):
    assert checkpoints.verify_checksums(os.path.join(directory, str(step))) is None
    assert os.path.exists(os.path.join(directory, str(step), checkpoints.CHECKSUM_FILE))


def test_a_workdir_with_checkpoints_best_still_loads(tmp_path):
  """The layout of earlier versions: checkpoints/ (latest, no metrics) and checkpoints_best/."""
  workdir = str(tmp_path)
  for name, steps in ((checkpoints.LATEST_DIR, (5, 6)), (checkpoints.BEST_DIR, (3,))):
    manager = ocp.CheckpointManager(os.path.join(workdir, name))
    for step in steps:
      manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(_state(step)["params"]),
          extra=ocp.args.JsonSave(EXTRA)))
    manager.wait_until_finished()
    manager.close()
  best = checkpoints.restore_checkpoint(workdir, "best")
  assert best.step == 3 and checkpoints.BEST_DIR in best.path
  assert checkpoints.restore_checkpoint(workdir, "latest").step == 6
