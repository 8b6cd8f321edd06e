r"""Fine-tuning a pretrained XxaCT-NN model on supervised targets.

Starts from the parameters of another run's checkpoint (e.g. an mxm_contrastive workdir); optimiser
state and step start fresh; heads absent from the pretrained model are initialised anew.

  python -m xxact_jax.main --config=configs/finetune.py:init=PRETRAIN_DIR --workdir=DIR
"""

from xxact_jax.training import defaults

# The paper's supervised recipe (Sec. 3.3), from pretrained weights.
RECIPE = dict(
    num_epochs=50, global_batch_size=32_768, dropout=0.1,
    # AdamW; the learning rate rises linearly from init_lr to peak_lr over the first
    # warmup_fraction of the steps, then follows a cosine to end_lr. No gradient clipping.
    optimizer=dict(init_lr=1e-6, peak_lr=5e-4, end_lr=1e-7, warmup_fraction=0.1,
                   b1=0.9, b2=0.98, weight_decay=0.01, grad_clip_norm=0.0))


def get_config(arg=None):
  return defaults.experiment("xxact", "supervised", arg, recipe=RECIPE)
