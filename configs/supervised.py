r"""Supervised training of the XxaCT-NN model (50 epochs).

Multi-target by default (formation energy + crystal system with uniform task sampling, as in the
paper); one target with `targets=band_gap`, several with `targets=formation_energy_per_atom+band_gap`,
all four with `targets=all`.

  python -m xxact_jax.main --config=configs/supervised.py --workdir=DIR
  python -m xxact_jax.main --config=configs/supervised.py:runlocal,targets=band_gap --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("xxact", "supervised", arg)
