"""Configs stored by earlier versions (checkpoints, workdirs' config.json, shipped models): the
one table of the fields added since, with the value that reproduces what those runs computed
(e.g. flax's 32-bit dropout), applied wherever a stored config is read, so that no other code
needs a fallback."""

import copy


def _structure_effects_default() -> dict:
  from xxact_jax.data import resimulate  # pylint: disable=g-import-not-at-top  (imports JAX)
  return resimulate.default_config().to_dict()


# Dotted paths into the stored config; a callable is called for its value (a default that needs
# an import).
ADDED_FIELDS = {
    "model.dropout_bits": 32, "model.regression_log_std": False, "model.readout": "fused_cls",
    "model.head_hidden": (), "model.xrd_intensity": "linear", "model.xrd_stem": "patch",
    "model.mxm_activation": "relu", "model.xrd_measurement_embedding": False,
    "model.xrd_max_peaks": 32, "model.xrd_peak_drop": 0.1, "model.fused_attention": False,
    "model.fused_norm": False, "model.fused_bias_grad": False,
    "data.train_fraction": 1.0, "data.fraction_seed": 0, "data.extra_train": "",
    "data.xrd_source": "stored", "regression_loss": "mse",
    "augment.structure": _structure_effects_default,
    "init_checkpoint": "latest",
}
RENAMED_FIELDS = {"init_which": "init_checkpoint"}


def upgrade(stored, prefix: str = ""):
  """Fills the fields a stored config (a dict or ConfigDict; with `prefix` "model.", the model
  part alone) lacks; returns it, updated in place."""
  for old, new in RENAMED_FIELDS.items():
    if not prefix and old in stored:
      stored[new] = stored[old]
      del stored[old]
  for dotted, value in ADDED_FIELDS.items():
    if not dotted.startswith(prefix):
      continue
    node = stored
    *parents, leaf = dotted[len(prefix):].split(".")
    for key in parents:
      if key not in node:
        node[key] = {}
      node = node[key]
    if node is not None and leaf not in node:   # a section stored as None stays so
      node[leaf] = value() if callable(value) else copy.deepcopy(value)
  model = stored if prefix == "model." else stored.get("model")
  if model is not None and not model.get("mxm", False):
    # Without an MXM head the activation computes nothing: any value reproduces the model, and
    # today's default lets such a run resume under today's config.
    model["mxm_activation"] = "softplus"
  return stored
