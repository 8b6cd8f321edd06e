r"""Pretraining with the mxm objective on the XxaCT-NN model (100 epochs).

  python -m xxact_jax.main --config=configs/mxm.py --workdir=DIR
  python -m xxact_jax.main --config=configs/mxm.py:runlocal --workdir=DIR   # small, CPU
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("xxact", "mxm", arg, targets=(), num_epochs=100)
