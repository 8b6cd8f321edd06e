r"""Trains and evaluates a model: python -m xxact_jax.main --config=configs/NAME.py --workdir=DIR.

`--config.field=value` overrides any config field, e.g. `--config.global_batch_size=4096`.
Re-running the same command resumes from the workdir's latest checkpoint. A mistake in the command
(an unknown config field, a missing config file, a bad value, a workdir that is a file) prints one
`error:` line and exits with status 2; XXACT_JAX_TRACEBACK=1 shows the traceback instead.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from xxact_jax import cli_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


# What a mistake in the command raises (flag parsing, config validation, the data and workdir
# checks); anything else is a fault of the package and keeps its traceback.
USER_ERRORS = (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError)


def _fail(error: BaseException):
  if os.environ.get("XXACT_JAX_TRACEBACK"):
    raise error
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  text = " ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else (lines[0] if lines else "")
  if isinstance(error, AttributeError):      # an override naming no field of the config
    text = f"unknown config field {text} in a --config.* override"
  print(f"error: {text or type(error).__name__} (XXACT_JAX_TRACEBACK=1 shows where)",
        file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except USER_ERRORS as e:
    _fail(e)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    _fail(NotADirectoryError(f"--workdir={_WORKDIR.value} is a file, not a directory"))
  logging.set_verbosity(logging.INFO)
  cli_logging.quiet_libraries()
  try:
    config = _CONFIG.value
    config.get("objective")       # a config file that failed to load raises on first use
  except USER_ERRORS as e:
    _fail(e)
  flags_now = os.environ.get("XLA_FLAGS", "")
  if config.get("xla_fast_compile") and "xla_backend_optimization_level" not in flags_now:
    # Read when the XLA backend starts, which has not happened yet.
    os.environ["XLA_FLAGS"] = (flags_now + " --xla_backend_optimization_level=0").strip()
  from xxact_jax.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value
  from xxact_jax.training import train  # pylint: disable=g-import-not-at-top
  try:
    train_and_evaluate(config, workdir)
  except train.Interrupted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(128 + e.signum)       # the shell's convention for "killed by this signal"
  except (ValueError, FileNotFoundError, NotADirectoryError, checkpoints.CheckpointError) as e:
    _fail(e)
  if jax_process_index() == 0:
    print(next_steps(workdir, config), flush=True)


def jax_process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


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
  app.run(main, flags_parser=_parse_flags)
