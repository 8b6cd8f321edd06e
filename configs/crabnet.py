r"""Baseline: CrabNet (composition only), supervised (50 epochs).

  python -m xxact_jax.main --config=configs/crabnet.py --workdir=DIR
  python -m xxact_jax.main --config=configs/crabnet.py:runlocal,targets=crystal_system --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("crabnet", "supervised", arg)
