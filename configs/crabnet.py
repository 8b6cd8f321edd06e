r"""Baseline: CrabNet (composition only), supervised (50 epochs), with CrabNet's RobustL1 loss.

  python -m xxact_jax.main --config=configs/crabnet.py --workdir=DIR
  python -m xxact_jax.main --config=configs/crabnet.py:runlocal,targets=crystal_system --workdir=DIR
  --config.regression_loss=mse trains the regression heads with MSE like the other models.
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  # CrabNet's own RobustL1 unless `loss=` says otherwise.
  return defaults.experiment("crabnet", "supervised", arg, regression_loss="robust_l1")
