"""Every `python -m xxact_jax...` command: absl flags on its own `flags.FlagValues` (the tests
import all commands into one process, and several share flag names), parsed by `parse` in its
`main(argv)`, run by `run`; a mistake is one `error:` line and exit status 2. Shared flag groups.
"""

import functools
import logging as std_logging
import os
import sys
from typing import NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging

from xxact_jax.inference.errors import InputError

# What a mistake in the command raises while its flags are parsed (config_flags loads the config
# file then); anything else is a fault of the package and keeps its traceback.
USER_ERRORS = (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError)


def fail(error) -> NoReturn:
  """One `error:` line of a message or exception; exit status 2 (XXACT_JAX_TRACEBACK=1 raises)."""
  if isinstance(error, BaseException) and os.environ.get("XXACT_JAX_TRACEBACK"):
    raise error
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  text = " ".join(lines[:1] + lines[1:][-1:]) or type(error).__name__
  if isinstance(error, AttributeError):      # an override naming no field of the config
    text = f"unknown config field {text} in a --config.* override"
  print(f"error: {text}", file=sys.stderr)
  sys.exit(2)


def parse(flag_values: flags.FlagValues, argv: Sequence[str] | None = None, doc: str = "",
          positional: bool = False) -> list[str]:
  """Parses `argv` (after the program's name; default sys.argv's) into `flag_values` afresh and
  returns the arguments that are no flags (refused unless `positional`); --help prints `doc`."""
  argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
  if flag_values.is_parsed():   # a second call in one process (tests) starts from the defaults
    flag_values.unparse_flags()
  for name in [n for n in flag_values if "." in n]:   # config overrides: each parse defines them
    delattr(flag_values, name)
  if {"--help", "-h", "--helpfull"} & set(argv):
    print(f"{doc.strip()}\n\nFlags:\n{flag_values.get_help(include_special_flags=False)}")
    sys.exit(0)
  saved, sys.argv = sys.argv, [sys.argv[0], *argv]   # config_flags reads its overrides there
  try:
    rest = flag_values(sys.argv)[1:]
  except USER_ERRORS as e:
    fail(e)
  finally:
    sys.argv = saved
  if rest and not positional:
    fail(f"unexpected arguments {rest}: every value is given as --flag=value")
  return rest


def input_errors(main):
  """`main` answering an InputError (a bad file, record or field): one `error:` line, status 2."""
  @functools.wraps(main)
  def wrapped(argv=None):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  return wrapped


class QuietLibraries(std_logging.Filter):
  """Keeps Orbax's INFO lines and JAX's backend probing out of the console."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not (
        "/orbax/" in record.pathname or record.name.startswith("jax._src.xla_bridge")
        and "Unable to initialize backend" in record.getMessage())


def run(main) -> NoReturn:
  """Runs `main(argv after the program's name)` under absl.app, which sets up logging: warnings,
  INFO lines where a command asks for them, none from the libraries (`QuietLibraries`)."""
  flags.FLAGS.mark_as_parsed()   # absl's own flags keep their defaults
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(QuietLibraries())
  app.run(lambda argv: main(argv[1:]), flags_parser=lambda argv: argv)


def define_checkpoint_flag(flag_values: flags.FlagValues) -> None:
  flags.DEFINE_enum("checkpoint", "best", ("best", "latest"),
                    "The workdir's checkpoint to restore.", flag_values=flag_values)


def define_prediction_flags(flag_values: flags.FlagValues) -> None:
  """Checkpoint, identification, `resample.Preprocessing` (read by `resample.from_arguments`)."""
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  define_checkpoint_flag(flag_values)
  flags.DEFINE_string("reference", "auto", "Measured scans: auto (the checkpoint's training "
                      "split; the shipped model's compact reference), none, or a prepared dataset "
                      "to look scans up in by composition.", flag_values=flag_values)
  flags.DEFINE_boolean("indexing", True, "Measured scans: restrict the answer for a scan the "
                       "reference does not match to the systems of the cubic, tetragonal, "
                       "hexagonal or orthorhombic lattice that indexes its lines, if one does.",
                       flag_values=flag_values)
  flags.DEFINE_float("min_confidence", 0.0, "A crystal-system answer less probable than this is "
                     "'undetermined', given with its top candidates.", flag_values=flag_values)
  default = resample.Preprocessing()
  flags.DEFINE_enum("background", default.background, resample.BACKGROUND_METHODS,
                    "Background removal of each measured scan before it meets the model.",
                    flag_values=flag_values)
  flags.DEFINE_boolean("strip_ka2", default.strip_ka2, "Remove the Kα2 companion reflections "
                       "of measured scans (Rachinger).", flag_values=flag_values)
  flags.DEFINE_boolean("redraw_peaks", default.redraw_peaks, "Find each scan's reflections and "
                       "draw them again as the training patterns' σ = 0.1° Gaussians.",
                       flag_values=flag_values)
  flags.DEFINE_float("min_coverage_deg", default.min_coverage_deg, "Refuse scans covering less "
                     "of 5–90° (Cu Kα scale); 0 accepts any.", flag_values=flag_values)
