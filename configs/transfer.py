r"""Frozen-trunk transfer: a new linear head on a trained model (band gap by default).

The encoders and the fusion module are restored from another run and frozen; only a freshly
initialised head is trained (the paper's transfer to an unseen target, Sec. 4.1).

  python -m xxact_jax.main --config=configs/transfer.py:init=TRAINED_DIR --workdir=DIR
"""

from xxact_jax.training import defaults

# The paper's supervised recipe (Sec. 3.3); only the new heads train.
RECIPE = dict(
    num_epochs=50, global_batch_size=32_768, dropout=0.1,
    # AdamW; the learning rate rises linearly from init_lr to peak_lr over the first
    # warmup_fraction of the steps, then follows a cosine to end_lr. No gradient clipping.
    optimizer=dict(init_lr=1e-6, peak_lr=5e-4, end_lr=1e-7, warmup_fraction=0.1,
                   b1=0.9, b2=0.98, weight_decay=0.01, grad_clip_norm=0.0))


def get_config(arg=None):
  c = defaults.experiment("xxact", "supervised", arg, recipe=RECIPE, targets=("band_gap",))
  c.trainable = "heads"
  c.init_exclude = ("heads",)
  return c
