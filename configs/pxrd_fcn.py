r"""Baseline: the PXRDPIAYN FCN (XRD only, a 1-D CNN), supervised (50 epochs).

  python -m xxact_jax.main --config=configs/pxrd_fcn.py --workdir=DIR
  python -m xxact_jax.main --config=configs/pxrd_fcn.py:runlocal,targets=crystal_system --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("pxrd_fcn", "supervised", arg)
