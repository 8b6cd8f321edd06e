"""The frozen mat2vec element table and CrabNet's sinusoidal fractional encodings."""

import functools
import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np

from xxact_jax import constants

MAT2VEC_DIM = 200


@functools.lru_cache(maxsize=None)
def mat2vec_table() -> np.ndarray:
  """float32 [119, 200]: row 0 (padding) is zero, row Z is the mat2vec vector of element Z."""
  resource = importlib.resources.files("xxact_jax.models") / "resources" / "mat2vec.csv"
  with resource.open("r", encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split(",")
    rows = [line.rstrip("\n").split(",") for line in f if line.strip()]
  if len(header) != MAT2VEC_DIM + 1:
    raise ValueError(f"{resource}: expected {MAT2VEC_DIM + 1} columns, found {len(header)}")
  symbols = [r[0] for r in rows]
  if list(symbols) != list(constants.ELEMENTS):
    raise ValueError(f"{resource}: element rows are not H..Og in atomic-number order")
  table = np.zeros((constants.NUM_ELEMENTS + 1, MAT2VEC_DIM), np.float32)
  table[1:] = np.asarray([[float(v) for v in r[1:]] for r in rows], np.float32)
  return table


def fractional_encoding(fractions: jax.Array, dim: int, resolution: int,
                        log_scale: bool) -> jax.Array:
  """CrabNet's FractionalEncoder, evaluated directly instead of gathered from its table.

  CrabNet tabulates pe[i, j] = sin(i / 50^(2j/dim)) (even j) or cos(...) (odd j) for
  i < resolution and looks up i = round(x * resolution) - 1, with x = fraction or
  x = min(0.0025 * log2(fraction)^2, 1), and x clipped below at 1/resolution. Computing the same
  row on the fly avoids a 5000 x 256 constant in every program.

  Args:
    fractions: float [..., K] element fractions (0 for padding).
    dim: encoding width (d_model // 2).
    resolution: table size (5000 in CrabNet).
    log_scale: use the log2 transform.

  Returns:
    float32 [..., K, dim].
  """
  x = fractions.astype(jnp.float32)
  if log_scale:
    # Padding (0) would give log2(0) = -inf; any fraction below 1/resolution maps to row 0 anyway.
    x = 0.0025 * jnp.log2(jnp.maximum(x, 1e-30)) ** 2
    x = jnp.minimum(x, 1.0)
  x = jnp.maximum(x, 1.0 / resolution)
  index = jnp.round(x * resolution) - 1.0
  j = jnp.arange(dim, dtype=jnp.float32)
  angle = index[..., None] / jnp.power(50.0, 2.0 * j / dim)
  return jnp.where(j % 2 == 0, jnp.sin(angle), jnp.cos(angle))
