r"""Baseline: the PXRDPIAYN FCN (XRD only, a 1-D CNN), supervised (50 epochs).

  python -m xxact_jax.main --config=configs/pxrd_fcn.py --workdir=DIR
  python -m xxact_jax.main --config=configs/pxrd_fcn.py:runlocal,targets=crystal_system --workdir=DIR
"""

from xxact_jax.training import defaults

# The paper's recipe for every supervised model (Sec. 3.3).
RECIPE = dict(
    num_epochs=50, global_batch_size=32_768, dropout=0.1,
    # AdamW; the learning rate rises linearly from init_lr to peak_lr over the first
    # warmup_fraction of the steps, then follows a cosine to end_lr. No gradient clipping.
    optimizer=dict(init_lr=1e-6, peak_lr=5e-4, end_lr=1e-7, warmup_fraction=0.1,
                   b1=0.9, b2=0.98, weight_decay=0.01, grad_clip_norm=0.0))


def get_config(arg=None):
  return defaults.experiment("pxrd_fcn", "supervised", arg, recipe=RECIPE)
