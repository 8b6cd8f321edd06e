"""Model configurations and `build_model`.

`model_config(name, size)` gives the paper's sizes and smaller ones that build the same code path;
`upgrade` fills the fields a stored (older) config lacks; `build_model` returns the Flax module,
whose class declares the inputs it reads and its embedding outputs (`model_class`).
"""

import flax.linen as nn
import ml_collections

from xxact_jax.models import baselines
from xxact_jax.models import heads
from xxact_jax.models import xxact

_MODELS = {"xxact": xxact.XxaCT, "crabnet": baselines.CrabNet,
           "xrd_transformer": baselines.XRDTransformer, "pxrd_fcn": baselines.PXRDFCN,
           "pxrd_fcn_mlp": baselines.PXRDFCNMLP}
MODEL_NAMES = tuple(_MODELS)
SIZES = ("paper", "small", "tiny")
PAPER_TARGETS = ("formation_energy_per_atom", "crystal_system")


def _transformer(d_model: int, num_layers: int, num_heads: int,
                 d_ff: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict(d_model=d_model, num_layers=num_layers, num_heads=num_heads, d_ff=d_ff))


def model_config(name: str, size: str = "paper") -> ml_collections.ConfigDict:
  """Returns the configuration of model `name` at `size` ("paper", "small" or "tiny").

  The paper's sizes (Sec. 3.1): CrabNet composition encoder d=512, 3 layers, 4 heads, FFN 2048;
  XRD encoder d=512, 3 layers, 4 heads, FFN 1024; fusion decoder d=768, 12 layers, 12 heads,
  FFN 2048. "small" (d_model 128, 2 layers everywhere; ~1 M parameters) is for experiments
  that train in well under an hour on a laptop CPU. "tiny" keeps every component with d_model
  32-64 and one layer, for CPU tests.
  """
  if name not in MODEL_NAMES:
    raise ValueError(f"Unknown model name {name!r}; known: {list(MODEL_NAMES)}")
  if size not in SIZES:
    raise ValueError(f"Unknown model size {size!r}; known: {list(SIZES)}")
  c = ml_collections.ConfigDict()
  c.name = name
  c.targets = PAPER_TARGETS
  c.mxm = False
  c.contrastive = False
  # "auto": bfloat16 on GPU/TPU, float32 on CPU. Parameters are always float32.
  c.dtype = "auto"
  c.dropout = 0.1
  c.remat = False
  # Random bits per dropout decision (models/layers.py `LayerConfig`): 32 | 16 | 8. 16 bits draw
  # half the random numbers of flax's nn.Dropout (32) and keep with probability 58982/65536 =
  # 0.899994 at dropout 0.1, the paper's rate; 8 bits (230/256 = 0.8984) do not. On an H100 all
  # of dropout costs ~1-3 % of the paper-size step (benchmarks/RESULTS.md).
  c.dropout_bits = 16
  # Pallas kernels for the transformer layers' memory-bound glue (models/kernels/, issue 29):
  # attention with dropout in one kernel reading the fused projection's layout; LayerNorm(x +
  # dropout(h)) forward and backward in one kernel each; bias gradients by one tiled column sum.
  # Same parameters and dropout rate; off until the GPU sweep (benchmarks/gpu_session.sh
  # `kernels`) shows they pay. Outside a GPU they run in Pallas interpret mode (slow).
  c.fused_attention = False
  c.fused_norm = False
  c.fused_bias_grad = False
  # XRD intensities (max 100) are multiplied by this before the model sees them; the MXM
  # reconstruction is in the same scaled units (see `xrd_tokens`).
  c.xrd_scale = 0.01
  # "linear" (the paper) or "sqrt": a signed square root of the scaled intensities
  # (models/encoders.py `xrd_input`), which weighs weak reflections more.
  c.xrd_intensity = "linear"
  # How the XRD encoder embeds its 17 tokens: "patch" (the paper: a linear projection of each
  # token's 250 points) or "conv" (strided 1-D convolutions over the whole pattern,
  # models/encoders.py `conv_stem`).
  c.xrd_stem = "patch"
  # With xrd_stem="peaks" (models/peak_tokens.py): the most prominent peaks read (one token
  # each), and in training the probability that each peak but the strongest is left out.
  c.xrd_max_peaks = 32
  c.xrd_peak_drop = 0.1
  # A learned embedding of the pattern's source added to every XRD token: simulated (stored or
  # CIF patterns) or measured (scans given to predict/evaluate --measured, and in training the
  # patterns the augmentation turned into measured-like ones). One model then keeps what it
  # reads from ideal patterns apart from what it reads from measured ones.
  c.xrd_measurement_embedding = False
  # Regression heads also output `<target>_log_std` for regression_loss="robust_l1" (the
  # crabnet model always does; the others only with this set).
  c.regression_log_std = False
  # What XxaCT-NN's heads read: "fused_cls" (the paper: the fused XRD [CLS], where composition
  # arrives only through cross-attention) or "fused_and_composition_cls" (the composition
  # encoder's [CLS] concatenated to it).
  c.readout = "fused_cls"
  # ReLU layers before each target's output layer (XxaCT, XRD transformer, FCN); () = linear.
  c.head_hidden = ()
  # Output activation of the MXM reconstruction head: "softplus", "relu" (the paper) or "linear".
  # With ReLU the head dies early in pretraining: the masked targets are mostly ~0, every unit
  # is pushed below zero, and from then on its gradient is exactly 0 (on mp_36k at the small
  # size the gradient norm was 0 from step ~900 and the MXM loss never moved).
  # Softplus keeps the output non-negative with a gradient everywhere.
  c.mxm_activation = "softplus"

  by_size = dict(
      paper=dict(composition=(512, 3, 4, 2048), xrd=(512, 3, 4, 1024), fusion=(768, 12, 12, 2048),
                 crabnet_hidden=(1024, 512, 256, 128),
                 fcn_channels=(16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512), fcn_features=64,
                 fcn_composition_hidden=(512, 512), fcn_fusion_hidden=(256,)),
      small=dict(composition=(128, 2, 4, 256), xrd=(128, 2, 4, 256), fusion=(128, 2, 4, 256),
                 crabnet_hidden=(256, 128, 64),
                 fcn_channels=(8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 128), fcn_features=32,
                 fcn_composition_hidden=(128,), fcn_fusion_hidden=(128,)),
      tiny=dict(composition=(32, 1, 2, 64), xrd=(32, 1, 2, 64), fusion=(48, 1, 2, 64),
                crabnet_hidden=(32, 16), fcn_channels=(4,) * 10 + (8,), fcn_features=8,
                fcn_composition_hidden=(16,), fcn_fusion_hidden=(16,)),
  )[size]
  c.composition = _transformer(*by_size["composition"])
  c.composition.resolution = 5000      # CrabNet's fractional-encoding table size
  c.xrd = _transformer(*by_size["xrd"])
  c.fusion = _transformer(*by_size["fusion"])
  # CrabNet baseline's residual output network (per element, then a masked mean).
  c.crabnet_hidden = by_size["crabnet_hidden"]

  # PXRDPIAYN baselines, adapted to 4250 inputs: conv-LeakyReLU-maxpool-dropout blocks, one
  # final convolution to `features` channels, a composition MLP over the fraction vector and a
  # fusion MLP over the concatenation.
  c.fcn = ml_collections.ConfigDict()
  c.fcn.channels = by_size["fcn_channels"]
  c.fcn.kernel_size = 5
  c.fcn.features = by_size["fcn_features"]
  c.fcn.composition_hidden = by_size["fcn_composition_hidden"]
  c.fcn.fusion_hidden = by_size["fcn_fusion_hidden"]
  return c


# Fields added after the first release, with the value that reproduces what a checkpoint written
# before them computed (e.g. flax's 32-bit dropout). `upgrade` is applied where a stored config
# is read, so the model code never needs a fallback.
_ADDED_FIELDS = dict(dropout_bits=32, regression_log_std=False, readout="fused_cls",
                     head_hidden=(), xrd_intensity="linear", xrd_stem="patch",
                     mxm_activation="relu", xrd_measurement_embedding=False,
                     xrd_max_peaks=32, xrd_peak_drop=0.1, fused_attention=False,
                     fused_norm=False, fused_bias_grad=False)
MXM_ACTIVATIONS = ("softplus", "relu", "linear")


def upgrade(model_config: ml_collections.ConfigDict | dict):
  """Fills the fields a stored (older) model config lacks; returns it, updated in place."""
  for key, value in _ADDED_FIELDS.items():
    if key not in model_config:
      model_config[key] = value
  if not model_config.get("mxm", False):
    # Without an MXM head the activation computes nothing: any value reproduces the model, and
    # today's default lets such a run resume under today's config.
    model_config["mxm_activation"] = "softplus"
  return model_config


def model_class(name: str) -> type[nn.Module]:
  """The Flax module class of model `name`.

  Its class attributes declare the model: `uses_composition` and `uses_xrd` (the inputs it reads)
  and `embeddings` ({output key: what it is}, "embedding" first).
  """
  if name not in _MODELS:
    raise ValueError(f"Unknown model_config.name {name!r}; known: {list(MODEL_NAMES)}")
  return _MODELS[name]


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """Returns the module; call it as model.apply(variables, species, fractions, xrd, ...)."""
  for target in model_config.targets:
    heads.target_width(target)  # Unknown targets fail here, before any tracing.
  return model_class(model_config.name)(model_config)
