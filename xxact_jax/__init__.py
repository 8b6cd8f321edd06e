"""XxaCT-NN in JAX: composition + powder XRD models for materials properties.

`xxact_jax.load(workdir)` returns a Predictor; it is imported on first use so
that `import xxact_jax` stays cheap (no JAX, no pymatgen).
"""


def __getattr__(name):
  if name == "load":
    from xxact_jax.inference.predictor import load  # pylint: disable=g-import-not-at-top
    return load
  raise AttributeError(f"module 'xxact_jax' has no attribute {name!r}")
