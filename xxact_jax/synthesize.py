r"""Writes random crystals of known symmetry as a CSV that `prepare` reads (xxact_jax/data/synthetic.py).

  python -m xxact_jax.synthesize --count=30000 --like=/data/mp36k --output=/data/synthetic.csv.gz
  python -m xxact_jax.prepare --input=/data/synthetic.csv.gz --output=/data/synthetic
  python -m xxact_jax.main --config=configs/measured.py --workdir=DIR \
      --config.data.path=/data/mp36k --config.data.extra_train=/data/synthetic

--like takes the space groups, elements and element counts from a prepared dataset's train
split; without it they are uniform (crystal systems equally likely).
"""

import json

from absl import flags

from xxact_jax import cli
from xxact_jax.data import synthetic

FLAGS = flags.FlagValues()
_OUTPUT = flags.DEFINE_string("output", None, "CSV to write (.csv or .csv.gz).", required=True,
                              flag_values=FLAGS)
_COUNT = flags.DEFINE_integer("count", 10_000, "Crystals to write.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draws (the ids name it).", flag_values=FLAGS)
_LIKE = flags.DEFINE_string("like", None, "A prepared dataset whose train split gives the priors.",
                            flag_values=FLAGS)
_MAX_SITES = flags.DEFINE_integer("max_sites", synthetic.SyntheticConfig.max_sites,
                                  "Sites per cell at most.", flag_values=FLAGS)
_MAX_ELEMENTS = flags.DEFINE_integer("max_elements", synthetic.SyntheticConfig.max_elements,
                                     "Elements per crystal at most.", flag_values=FLAGS)
_SPECIAL = flags.DEFINE_float("special_probability",
                              synthetic.SyntheticConfig.special_probability,
                              "Probability that a fractional coordinate takes a special value.",
                              flag_values=FLAGS)


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  config = synthetic.SyntheticConfig(max_sites=_MAX_SITES.value, max_elements=_MAX_ELEMENTS.value,
                                     special_probability=_SPECIAL.value).check()
  priors = (synthetic.Priors.like(_LIKE.value, config.max_elements) if _LIKE.value
            else synthetic.Priors.uniform(config.max_elements))
  print(json.dumps(synthetic.timed_write(_OUTPUT.value, _COUNT.value, _SEED.value, priors, config)))


if __name__ == "__main__":
  cli.run(main)
