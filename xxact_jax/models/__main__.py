r"""Prints parameter counts per component and forward FLOPs per sample of a config's model.

  python -m xxact_jax.models --config=configs/supervised.py
  python -m xxact_jax.models --config=configs/supervised.py:runlocal --batch_size=16
  python -m xxact_jax.models --config=configs/supervised.py --parameters   # every parameter

The last line is JSON: {"composition_encoder": ..., "xrd_encoder": ..., "fusion": ...,
"heads": ..., "total": ..., "forward_flops_per_sample": ...}.
"""

import json

from absl import flags
from ml_collections import config_flags

from xxact_jax import cli
from xxact_jax.models import config as config_lib
from xxact_jax.models import parameter_count

FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/NAME.py).", flag_values=FLAGS)
flags.mark_flag_as_required("config", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Batch size of the program whose FLOPs are "
                                   "counted (the figure is divided by it).", flag_values=FLAGS)
_MAX_ELEMENTS = flags.DEFINE_integer("max_elements", 10, "Element slots per composition.",
                                     flag_values=FLAGS)
_PARAMETERS = flags.DEFINE_bool("parameters", False, "Also print every parameter's name, shape "
                                "and size.", flag_values=FLAGS)


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  if "objective" in _CONFIG.value:       # a trainer config: the model follows its targets
    from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
    model_config = defaults.model_of(_CONFIG.value)
  else:
    model_config = config_lib.ModelConfig.from_config(_CONFIG.value.model)
  params = parameter_count.abstract_params(model_config, _MAX_ELEMENTS.value)
  counts = parameter_count.parameter_counts(params)
  if _PARAMETERS.value:
    print(parameter_count.parameter_table(params))
  print(f"model: {model_config.name}  dtype: {model_config.dtype}  "
        f"targets: {', '.join(model_config.targets) or '-'}")
  print(f"{'component':<22}{'parameters':>14}")
  for name, value in counts.items():
    print(f"{name:<22}{value:>14,}")
  flops = parameter_count.forward_flops_per_sample(model_config, _BATCH_SIZE.value,
                                                   _MAX_ELEMENTS.value)
  print(f"{'forward FLOPs/sample':<22}{flops:>14.4g}")
  print(json.dumps({**counts, "forward_flops_per_sample": flops}))


if __name__ == "__main__":
  cli.run(main)
