r"""Fine-tuning a pretrained XxaCT-NN model on supervised targets.

Starts from the parameters of another run's checkpoint (e.g. an mxm_contrastive workdir); optimiser
state and step start fresh; heads absent from the pretrained model are initialised anew.

  python -m xxact_jax.main --config=configs/finetune.py:init=PRETRAIN_DIR --workdir=DIR
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  return defaults.experiment("xxact", "supervised", arg)
