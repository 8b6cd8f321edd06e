"""One trained network behind one jitted forward pass, its outputs in the targets' units."""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np

from xxact_jax import targets as targets_lib
from xxact_jax.inference.errors import InputError

DEFAULT_MAX_ELEMENTS = 10


class Model:
  """A trained network's outputs for model arrays (species, fractions, pattern on the grid).

  Regression outputs are de-standardised as the train step's evaluation does
  (targets.Target.destandardise: value·std + mean, in eV/atom or eV); classification outputs are
  softmax probabilities, those of measured scans at the fitted `temperatures` ({target: T},
  inference/calibration.py; simulated patterns keep T = 1). Batches are padded to a power of
  two up to `batch_size` so a handful of shapes are ever compiled.
  """

  def __init__(self, params, config, target_stats: dict, max_elements: int, *,
               workdir: str = "", step: int | None = None, batch_size: int = 256,
               extra: dict | None = None, temperatures: dict[str, float] | None = None):
    from xxact_jax.models import build_model  # pylint: disable=g-import-not-at-top
    self.params = jax.device_put(params)
    self.config = config
    self.target_stats = target_stats
    self.max_elements = int(max_elements)
    self.workdir = workdir
    self.step = step
    self.extra = extra or {}
    self.batch_size = int(batch_size)
    self.temperatures = dict(temperatures or {})
    self.model_name = config.model.name
    self.targets = tuple(config.model.targets)
    network = build_model(config.model)
    # What the network reads (an unused input is fed as zeros) and which outputs are embeddings.
    self.uses_composition = network.uses_composition
    self.uses_xrd = network.uses_xrd
    self.embeddings = dict(network.embeddings)
    embedding_keys = tuple(self.embeddings)
    stats = {t: {"mean": float(s["mean"]), "std": float(s["std"])}
             for t, s in target_stats.items()}
    targets = self.targets

    def forward(params, species, fractions, xrd, measured, temperatures):
      out = network.apply({"params": params}, species, fractions, xrd, train=False,
                          measured=measured)
      result = {k: out[k].astype(jnp.float32) for k in embedding_keys}
      for t in targets:
        target = targets_lib.get(t)
        if target.is_regression:
          result[t] = target.destandardise(out[t].astype(jnp.float32), stats[t])
        else:
          scale = jnp.where(measured, 1.0 / temperatures[t], 1.0)[:, None]
          result[t] = jax.nn.softmax(out[t].astype(jnp.float32) * scale, axis=-1)
      return result

    self._forward = jax.jit(forward)

  def predict_arrays(self, species, fractions, xrd, measured=False) -> dict[str, np.ndarray]:
    """Outputs for [N, K] species/fractions and [N, 4250] patterns, in batches: regression [N],
    class probabilities [N, C], embeddings [N, D]. `measured` (a bool, or bool [N]): which
    patterns are measured scans (read as such by a model with a measurement embedding, and
    calibrated)."""
    species = np.asarray(species, np.int32)
    fractions = np.asarray(fractions, np.float32)
    xrd = np.asarray(xrd, np.float32)
    n = species.shape[0]
    measured = np.broadcast_to(np.asarray(measured, bool), (n,))
    if n == 0:
      raise ValueError("predict_arrays needs at least one sample")
    temperatures = {t: np.float32(self.temperatures.get(t, 1.0)) for t in self.targets
                    if not targets_lib.get(t).is_regression}
    chunks = []
    for start in range(0, n, self.batch_size):
      stop = min(start + self.batch_size, n)
      size = min(self.batch_size, 1 << max(0, stop - start - 1).bit_length())
      pad = lambda a: np.concatenate([a[start:stop], np.repeat(a[start:start + 1],
                                                               size - (stop - start), 0)])
      out = self._forward(self.params, pad(species), pad(fractions), pad(xrd), pad(measured),
                          temperatures)
      chunks.append({k: np.asarray(v)[:stop - start] for k, v in out.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

  def uncalibrated(self) -> "Model":
    """This model with its uncalibrated probabilities (what calibration fits and is scored
    against)."""
    plain = copy.copy(self)
    plain.temperatures = {}
    return plain


def restore(workdir: str, checkpoint: str = "best"):
  """A workdir's best or latest checkpoint (training/checkpoints.py), or an InputError naming it."""
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise InputError("no such workdir", path=workdir)
  try:
    return checkpoints.restore_checkpoint(workdir, checkpoint)
  except checkpoints.CheckpointError as e:
    raise InputError(str(e), path=workdir) from None


def load(workdir: str, checkpoint: str = "best", batch_size: int = 256) -> Model:
  """The Model of a workdir's best or latest checkpoint, with its calibration."""
  from xxact_jax.inference import calibration  # pylint: disable=g-import-not-at-top
  restored = restore(workdir, checkpoint)
  return Model(restored.params, restored.config, restored.target_stats,
               restored.extra.get("max_elements") or DEFAULT_MAX_ELEMENTS, workdir=workdir,
               step=restored.step, batch_size=batch_size, extra=restored.extra,
               temperatures=calibration.read_temperatures(workdir))
