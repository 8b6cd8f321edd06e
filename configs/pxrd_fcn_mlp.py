r"""Baseline: the PXRDPIAYN FCN+MLP (XRD CNN + composition MLP), supervised (50 epochs).

  python -m xxact_jax.main --config=configs/pxrd_fcn_mlp.py --workdir=DIR
  python -m xxact_jax.main --config=configs/pxrd_fcn_mlp.py:runlocal,targets=crystal_system --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("pxrd_fcn_mlp", "supervised", arg)
