r"""Trains and evaluates a model: python -m xxact_jax.main --config=configs/NAME.py --workdir=DIR.

`--config.field=value` overrides any config field, e.g. `--config.global_batch_size=4096`.
Re-running the same command resumes from the workdir's latest checkpoint. A mistake in the command
(an unknown config field, a missing config file, a bad value, a workdir that is a file) prints one
`error:` line and exits with status 2; XXACT_JAX_TRACEBACK=1 shows the traceback instead.
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from xxact_jax import cli

FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True, flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics.", flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    cli.fail(NotADirectoryError(f"--workdir={_WORKDIR.value} is a file, not a directory"))
  logging.set_verbosity(logging.INFO)
  try:
    config = _CONFIG.value
    config.get("objective")       # a config file that failed to load raises on first use
  except cli.USER_ERRORS as e:
    cli.fail(e)
  flags_now = os.environ.get("XLA_FLAGS", "")
  if config.get("xla_fast_compile") and "xla_backend_optimization_level" not in flags_now:
    # Read when the XLA backend starts, which has not happened yet.
    os.environ["XLA_FLAGS"] = (flags_now + " --xla_backend_optimization_level=0").strip()
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import train  # pylint: disable=g-import-not-at-top
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except train.Interrupted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)       # the shell's convention for "killed by this signal"
  except (ValueError, FileNotFoundError, NotADirectoryError, checkpoints.CheckpointError) as e:
    cli.fail(e)
  if jax.process_index() == 0:
    print(next_steps(_WORKDIR.value, config), flush=True)


def next_steps(workdir: str, config) -> str:
  """Where the run's outputs are and the commands that use them."""
  data = config.data.path
  if not data:   # the embedded sample, featurised into its cache by the run
    from xxact_jax.data import default_dataset_path  # pylint: disable=g-import-not-at-top
    data = default_dataset_path()
  return "\n".join([
      f"Outputs in {workdir}: metrics.jsonl (losses, evaluations), checkpoints/ (the latest "
      "steps and the best on the held-out split), config.json.",
      "Next:",
      f"  python -m xxact_jax.report --workdir={workdir}              # figures and summary.md",
      f"  python -m xxact_jax.evaluate --workdir={workdir} --data={data} "
      f"--output={os.path.join(workdir, 'eval')}   # the dataset it trained on (its test split; "
      "any prepared dataset works)",
      f"  python -m xxact_jax.evaluate --workdir={workdir} --measured=index.csv --output=OUT"
      "   # labelled measured scans",
      f"  python -m xxact_jax.predict --workdir={workdir} --formula=Fe2O3 --xrd=scan.xy",
  ])


if __name__ == "__main__":
  cli.run(main)
