r"""Pretraining with the mxm objective on the XxaCT-NN model (100 epochs).

  python -m xxact_jax.main --config=configs/mxm.py --workdir=DIR
  python -m xxact_jax.main --config=configs/mxm.py:runlocal --workdir=DIR   # small, CPU
"""

from xxact_jax.training import defaults

# The paper's pretraining recipe (Sec. 3.3): 100 epochs.
RECIPE = dict(
    num_epochs=100, global_batch_size=32_768, dropout=0.1,
    # AdamW; the learning rate rises linearly from init_lr to peak_lr over the first
    # warmup_fraction of the steps, then follows a cosine to end_lr. No gradient clipping.
    optimizer=dict(init_lr=1e-6, peak_lr=5e-4, end_lr=1e-7, warmup_fraction=0.1,
                   b1=0.9, b2=0.98, weight_decay=0.01, grad_clip_norm=0.0))


def get_config(arg=None):
  return defaults.experiment("xxact", "mxm", arg, targets=(), recipe=RECIPE)
