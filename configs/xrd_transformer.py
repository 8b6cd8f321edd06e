r"""Baseline: the XRD transformer (XRD only), supervised (50 epochs).

  python -m xxact_jax.main --config=configs/xrd_transformer.py --workdir=DIR
  python -m xxact_jax.main --config=configs/xrd_transformer.py:runlocal,targets=crystal_system --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("xrd_transformer", "supervised", arg)
