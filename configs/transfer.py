r"""Frozen-trunk transfer: a new linear head on a trained model (band gap by default).

The encoders and the fusion module are restored from another run and frozen; only a freshly
initialised head is trained (the paper's transfer to an unseen target, Sec. 4.1).

  python -m xxact_jax.main --config=configs/transfer.py:init=TRAINED_DIR --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  c = defaults.experiment("xxact", "supervised", arg, targets=("band_gap",))
  c.trainable = "heads"
  c.init_exclude = ("heads",)
  return c
