"""The two encoders and the inputs they read.

Composition: CrabNet's encoder, frozen mat2vec element embeddings + sinusoidal fractional
encodings + a transformer. XRD: 4250 intensities -> 17 tokens of 250 -> [CLS] + 17 embeddings.
`check_inputs` validates (species, fractions, xrd, xrd_mask) before any XLA op, so a bad batch
fails with a message naming the array.
"""

import functools
import importlib.resources
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xxact_jax import constants
from xxact_jax.models import layers
from xxact_jax.models import peak_tokens

if TYPE_CHECKING:   # config.py imports this module
  from xxact_jax.models import config as config_lib

MAT2VEC_DIM = 200
XRD_INTENSITIES = ("linear", "sqrt")


# Input checks.

def check_inputs(species, fractions, xrd, xrd_mask=None, *, needs_composition: bool = True,
                 needs_xrd: bool = True) -> None:
  """Checks shapes (always, from static shapes) and atomic numbers (when the values are concrete);
  a ValueError names the array, its shape and what was expected."""
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
  # Values are read where they can be now (not tracers or abstract shapes).
  if (needs_composition and not isinstance(species, jax.core.Tracer)
      and isinstance(species, (np.ndarray, np.generic, jax.Array, list, tuple))):
    values = np.asarray(species)
    if not np.issubdtype(values.dtype, np.integer):
      raise ValueError(f"species must hold integer atomic numbers; got dtype {values.dtype}")
    bad = (values < 0) | (values > constants.NUM_ELEMENTS)
    if bad.any():
      row, col = np.argwhere(bad)[0]
      raise ValueError(
          f"species holds atomic number {values[row, col]} at [{row}, {col}] (batch row {row}); "
          f"valid ids are 0 (padding) to {constants.NUM_ELEMENTS}")


def prepend_cls(module: nn.Module, x: jax.Array, dtype) -> jax.Array:
  """[B, T, D] -> [B, 1 + T, D]: `module`'s learnable [CLS] token (param "cls") first."""
  cls = module.param("cls", nn.initializers.normal(0.02), (x.shape[-1],), jnp.float32)
  return jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (x.shape[0], 1, x.shape[-1])), x],
                         axis=1)


# Composition.

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

  fractions: float [..., K] (0 for padding); dim: the encoding width (d_model // 2); resolution:
  the table size (5000 in CrabNet). Returns float32 [..., K, dim].
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


class CompositionEncoder(nn.Module):
  """Encodes (species, fractions) into a token sequence.

  Attributes:
    config: the composition transformer's sizes and fractional-encoding resolution.
    use_cls: prepend a learnable [CLS] token (the paper's encoder); CrabNet alone has none.
    output_dim: if set, the tokens are projected to this width (the fusion width in XxaCT-NN).
  """
  config: "config_lib.CompositionConfig"
  layer_config: layers.LayerConfig
  use_cls: bool = True
  output_dim: int | None = None

  @nn.compact
  def __call__(self, species: jax.Array, fractions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (tokens [B, T, D], mask bool [B, T]); T = K (+1 with [CLS] first)."""
    cfg = self.config
    dtype = self.layer_config.dtype
    d_model = cfg.d_model
    table = jnp.asarray(mat2vec_table(), dtype)
    x = layers.dense_general(d_model, "element_projection", dtype)(table[species])
    emb_scale = self.param("emb_scaler", nn.initializers.ones, (), jnp.float32)
    pos_scale = self.param("pos_scaler", nn.initializers.ones, (), jnp.float32)
    pos_scale_log = self.param("pos_scaler_log", nn.initializers.ones, (), jnp.float32)
    half = d_model // 2
    frac_enc = fractional_encoding(fractions, half, cfg.resolution, False)
    log_enc = fractional_encoding(fractions, d_model - half, cfg.resolution, True)
    # CrabNet: x * 2^s_emb + [pe * 2^((1 - s_pe)^2), ple * 2^((1 - s_ple)^2)].
    encoding = jnp.concatenate([frac_enc * 2.0 ** ((1.0 - pos_scale) ** 2),
                                log_enc * 2.0 ** ((1.0 - pos_scale_log) ** 2)], axis=-1)
    x = x * (2.0 ** emb_scale).astype(dtype) + encoding.astype(dtype)
    mask = species > 0
    if self.use_cls:
      x = prepend_cls(self, x, dtype)
      mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
    x = layers.TransformerEncoder(cfg.num_layers, cfg.num_heads, cfg.d_ff, self.layer_config,
                                  name="transformer")(x, mask)
    # Padded slots carry no information downstream (CrabNet zeroes them too).
    x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
    if self.output_dim is not None:
      x = layers.dense_general(self.output_dim, "output_projection", dtype)(x)
    return x, mask


# XRD.

def xrd_input(xrd: jax.Array, xrd_scale: float, intensity: str = "linear") -> jax.Array:
  """float32, the shape of `xrd`: the pattern (max 100) in the model's input units.

  "linear" multiplies by `xrd_scale`; "sqrt" then takes a signed square root, which compresses
  relative intensities (texture, counting statistics) so that weak reflections weigh more, while
  the unmeasured marker (`constants.UNMEASURED_INTENSITY` × scale = -1 at scale 0.01) keeps its
  value.
  """
  x = xrd.astype(jnp.float32) * xrd_scale
  if intensity == "linear":
    return x
  if intensity == "sqrt":
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))
  raise ValueError(f"Unknown model.xrd_intensity {intensity!r}; known: {list(XRD_INTENSITIES)}")


def xrd_tokens(xrd: jax.Array, xrd_scale: float, intensity: str = "linear") -> jax.Array:
  """float32 [B, 17, 250]: the pattern in input units split into tokens (also the MXM target)."""
  tokens = xrd.reshape(xrd.shape[0], constants.XRD_NUM_TOKENS, constants.XRD_TOKEN_SIZE)
  return xrd_input(tokens, xrd_scale, intensity)


XRD_STEMS = ("patch", "conv", "peaks")
# Convolutional stem: (channels, kernel, stride) per layer; the strides multiply to the token
# size, so the stem ends at the 17 token positions. The first kernel spans ±4 grid points
# (±0.08°, the core of a σ = 0.1° peak) at every 5th point: striding from the start keeps the
# stem's cost ~1/10 of the transformer's on CPU.
CONV_STEM_LAYERS = ((32, 9, 5), (64, 5, 5))
CONV_STEM_FINAL_STRIDE = constants.XRD_TOKEN_SIZE // 25      # 10: 5 × 5 × 10 = 250


def conv_stem(x: jax.Array, d_model: int, dtype) -> jax.Array:
  """[B, 17, 250] tokens (input units) -> [B, 17, d_model] through strided 1-D convolutions.

  A peak is recognised by the same filters wherever it sits, where the paper's linear patch
  projection learns each of a token's 250 positions separately.
  """
  x = x.reshape(x.shape[0], -1, 1)
  for i, (channels, kernel, stride) in enumerate(CONV_STEM_LAYERS):
    x = nn.Conv(channels, (kernel,), strides=(stride,), padding="SAME", dtype=dtype,
                param_dtype=jnp.float32, name=f"stem_conv_{i}")(x)
    x = nn.gelu(x)
  return nn.Conv(d_model, (CONV_STEM_FINAL_STRIDE,), strides=(CONV_STEM_FINAL_STRIDE,),
                 padding="VALID", dtype=dtype, param_dtype=jnp.float32, name="stem_output")(x)


class XRDEncoder(nn.Module):
  """Transformer over XRD tokens with a learnable [CLS] and learnable positional embeddings.

  Attributes:
    config: the model config: `xrd` (the transformer's sizes) and the `xrd_*` fields (input
      scale and intensity, stem, peaks, measurement embedding; models/config.py says each).
    output_dim: if set, the tokens are projected to this width (the fusion width in XxaCT-NN).
  """
  config: "config_lib.ModelConfig"
  layer_config: layers.LayerConfig
  output_dim: int | None = None

  @nn.compact
  def __call__(self, xrd: jax.Array, xrd_mask: jax.Array | None = None,
               measured: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """Returns (tokens [B, 1 + T, D], token mask bool [B, 1 + T] or None when every token is
    real): the [CLS] embedding first, then one per XRD token (17 profile patches, or up to
    `max_peaks` peaks with stem="peaks", the absent ones masked). xrd: [B, 4250] pattern;
    xrd_mask: optional bool [B, 17], True tokens replaced by the learned [MASK] token; measured:
    optional bool [B] (or a scalar for the whole batch), True for a measured scan (or a pattern
    augmented as one), read only with `xrd_measurement_embedding`.
    """
    cfg = self.config.xrd
    dtype = self.layer_config.dtype
    stem = self.config.xrd_stem
    if stem == "peaks":
      return self._peak_sequence(xrd, xrd_mask, measured)
    tokens = xrd_tokens(xrd, self.config.xrd_scale, self.config.xrd_intensity).astype(dtype)
    # Created even when unused so that pretrained and fine-tuned parameter trees match.
    mask_token = self.param("mask_token", nn.initializers.normal(0.02),
                            (constants.XRD_TOKEN_SIZE,), jnp.float32)
    if xrd_mask is not None:
      tokens = jnp.where(xrd_mask[..., None], mask_token.astype(dtype), tokens)
    if stem == "conv":
      x = conv_stem(tokens, cfg.d_model, dtype)
    else:
      x = layers.dense_general(cfg.d_model, "input_projection", dtype)(tokens)
    x = prepend_cls(self, x, dtype)
    positions = self.param("positional_embedding", nn.initializers.normal(0.02),
                           (constants.XRD_NUM_TOKENS + 1, cfg.d_model), jnp.float32)
    x = x + positions.astype(dtype)
    return self._encode(x, None, measured)

  def _peak_sequence(self, xrd, xrd_mask, measured):
    """stem="peaks": [CLS] + one token per peak (models/peak_tokens.py), absent peaks masked."""
    if xrd_mask is not None:
      raise ValueError("model.xrd_stem='peaks' has no profile tokens to mask: masked XRD "
                       "modelling (objective mxm) needs xrd_stem 'patch' or 'conv'")
    cfg = self.config.xrd
    dtype = self.layer_config.dtype
    two_theta, height, width, valid = peak_tokens.find_peaks(xrd, self.config.xrd_max_peaks)
    peak_drop = self.config.xrd_peak_drop
    if peak_drop > 0 and not self.layer_config.deterministic:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - peak_drop, valid.shape)
      valid = valid & keep.at[:, 0].set(True)      # the strongest peak always stays
    features = jax.lax.stop_gradient(peak_tokens.peak_features(two_theta, height, width))
    h = nn.gelu(layers.dense_general(cfg.d_model, "peak_embedding", dtype)(features.astype(dtype)))
    x = layers.dense_general(cfg.d_model, "input_projection", dtype)(h)
    x = jnp.where(valid[..., None], x, jnp.zeros((), dtype))
    x = prepend_cls(self, x, dtype)
    mask = jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], axis=1)
    return self._encode(x, mask, measured)

  def _encode(self, x, mask, measured):
    """The measurement embedding, the transformer and the output projection, for every stem."""
    cfg = self.config.xrd
    dtype = self.layer_config.dtype
    if self.config.xrd_measurement_embedding:
      source = self.param("measurement_embedding", nn.initializers.normal(0.02),
                          (2, cfg.d_model), jnp.float32)
      index = (jnp.zeros((x.shape[0],), jnp.int32) if measured is None
               else jnp.broadcast_to(jnp.asarray(measured), (x.shape[0],)).astype(jnp.int32))
      x = x + source[index][:, None, :].astype(dtype)
    x = layers.TransformerEncoder(cfg.num_layers, cfg.num_heads, cfg.d_ff, self.layer_config,
                                  name="transformer")(x, mask)
    if self.output_dim is not None:
      x = layers.dense_general(self.output_dim, "output_projection", dtype)(x)
    return x, mask
