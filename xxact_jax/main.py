r"""Trains and evaluates a model: python -m xxact_jax.main --config=configs/NAME.py --workdir=DIR.

`--config.field=value` overrides any config field, e.g. `--config.global_batch_size=4096`.
Re-running the same command resumes from the workdir's latest checkpoint.
"""

import logging as logging_std
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
  """Keeps INFO lines of checkpointing internals out of the console (warnings still show)."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  flags_now = os.environ.get("XLA_FLAGS", "")
  if config.get("xla_fast_compile") and "xla_backend_optimization_level" not in flags_now:
    # Read when the XLA backend starts, which has not happened yet.
    os.environ["XLA_FLAGS"] = (flags_now + " --xla_backend_optimization_level=0").strip()
  from xxact_jax.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value
  train_and_evaluate(config, workdir)
  if jax_process_index() == 0:
    print(next_steps(workdir, config), flush=True)


def jax_process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def next_steps(workdir: str, config) -> str:
  """Where the run's outputs are and the commands that use them."""
  data = config.data.path or "the embedded sample"
  return "\n".join([
      f"Outputs in {workdir}: metrics.jsonl (losses, evaluations), checkpoints/ (latest), "
      "checkpoints_best/ (best on the held-out split), config.json.",
      "Next:",
      f"  python -m xxact_jax.report --workdir={workdir}              # figures and summary.md",
      f"  python -m xxact_jax.evaluate --workdir={workdir} --data=DATASET --output=OUT"
      f"   # any prepared dataset (trained on {data})",
      f"  python -m xxact_jax.evaluate --workdir={workdir} --measured=index.csv --output=OUT"
      "   # labelled measured scans",
      f"  python -m xxact_jax.predict --workdir={workdir} --formula=Fe2O3 --xrd=scan.xy",
  ])


if __name__ == "__main__":
  app.run(main)
