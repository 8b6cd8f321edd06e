r"""XxaCT-NN supervised on measured-like inputs: the paper's training with the XRD batch augmented
inside the train step as a laboratory diffractometer would record it (xxact_jax/data/augment.py:
lattice strain, zero and displacement shifts, the Kα doublet, Caglioti and Scherrer broadening,
relative intensities, impurity peaks, background, counting noise, narrower scan ranges).

  python -m xxact_jax.main --config=configs/measured.py --workdir=DIR --config.data.path=DATASET
  python -m xxact_jax.main --config=configs/measured.py:runlocal,targets=crystal_system --workdir=DIR
  --config.augment.strain=0.02 (any range of data/augment.py's default_config)
"""

from xxact_jax.training import defaults


def get_config(arg=None):
  c = defaults.experiment("xxact", "supervised", arg)
  c.augment.enabled = True
  return c
