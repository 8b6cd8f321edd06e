"""Console logging of the command-line tools: the package's INFO lines, not the libraries'."""

import logging


class QuietLibraries(logging.Filter):
  """Keeps INFO lines of checkpointing internals and JAX's backend probing (every run on a
  machine without a TPU logged "Unable to initialize backend 'tpu'") out of the console;
  warnings still show."""

  def filter(self, record):
    if record.levelno >= logging.WARNING:
      return True
    if "/orbax/" in record.pathname:
      return False
    return not (record.name.startswith("jax._src.xla_bridge")
                and "Unable to initialize backend" in record.getMessage())


def quiet_libraries() -> None:
  """Adds QuietLibraries to absl's handler (call once the CLI has set its verbosity)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
