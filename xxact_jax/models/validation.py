"""Input checks run before any XLA op, so bad batches fail with a message naming the array."""

import jax
import numpy as np

from xxact_jax import constants


def _is_concrete(x) -> bool:
  """True for values that can be read now (not tracers or abstract shapes)."""
  if isinstance(x, jax.core.Tracer):
    return False
  return isinstance(x, (np.ndarray, np.generic, jax.Array, list, tuple))


def check_inputs(species, fractions, xrd, xrd_mask=None, *, needs_composition: bool = True,
                 needs_xrd: bool = True) -> None:
  """Checks shapes (always, from static shapes) and atomic numbers (when the values are concrete).

  Raises:
    ValueError: naming the array, its shape and what was expected.
  """
  shapes = {"species": np.shape(species), "fractions": np.shape(fractions), "xrd": np.shape(xrd)}
  if xrd_mask is not None:
    shapes["xrd_mask"] = np.shape(xrd_mask)
  described = ", ".join(f"{k} {v}" for k, v in shapes.items())
  if needs_composition:
    if len(shapes["species"]) != 2 or shapes["species"][1] < 1:
      raise ValueError(f"species must have shape [batch, max_elements]; got {described}")
    if shapes["fractions"] != shapes["species"]:
      raise ValueError(f"species and fractions must have the same shape; got {described}")
  if needs_xrd:
    if len(shapes["xrd"]) != 2 or shapes["xrd"][1] != constants.NUM_XRD_POINTS:
      raise ValueError(
          f"xrd must have shape [batch, {constants.NUM_XRD_POINTS}]; got {described}")
    if xrd_mask is not None and (len(shapes["xrd_mask"]) != 2
                                 or shapes["xrd_mask"][1] != constants.XRD_NUM_TOKENS):
      raise ValueError(
          f"xrd_mask must have shape [batch, {constants.XRD_NUM_TOKENS}]; got {described}")
  batch_sizes = {k: v[0] for k, v in shapes.items()
                 if len(v) >= 1 and (needs_composition or k not in ("species", "fractions"))
                 and (needs_xrd or k not in ("xrd", "xrd_mask"))}
  if len(set(batch_sizes.values())) > 1:
    raise ValueError(f"Inputs disagree on the batch size: {described}")
  if needs_composition and _is_concrete(species):
    values = np.asarray(species)
    if not np.issubdtype(values.dtype, np.integer):
      raise ValueError(f"species must hold integer atomic numbers; got dtype {values.dtype}")
    bad = (values < 0) | (values > constants.NUM_ELEMENTS)
    if bad.any():
      row, col = np.argwhere(bad)[0]
      raise ValueError(
          f"species holds atomic number {values[row, col]} at [{row}, {col}] (batch row {row}); "
          f"valid ids are 0 (padding) to {constants.NUM_ELEMENTS}")
