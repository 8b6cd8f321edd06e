"""Model configurations and `build_model`.

`model_config(name, size)` gives the paper's sizes and smaller ones that build the same code path,
as the ml_collections ConfigDict that experiment files hold (`config.model`). `ModelConfig` is the
frozen, typed form the modules receive (as flax's lm1b `TransformerConfig`): `build_model` makes
it once from a ConfigDict, filling the fields a stored (older) config lacks (stored_config.py) and
checking every choice before anything is traced.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections

from xxact_jax import stored_config
from xxact_jax import targets as targets_lib
from xxact_jax.models import baselines
from xxact_jax.models import encoders
from xxact_jax.models import layers
from xxact_jax.models import xxact

_MODELS = {"xxact": xxact.XxaCT, "crabnet": baselines.CrabNet,
           "xrd_transformer": baselines.XRDTransformer, "pxrd_fcn": baselines.PXRDFCN,
           "pxrd_fcn_mlp": baselines.PXRDFCNMLP}
MODEL_NAMES = tuple(_MODELS)
SIZES = ("paper", "small", "tiny")
MXM_ACTIVATIONS = ("softplus", "relu", "linear")
READOUTS = ("fused_cls", "fused_and_composition_cls")
# Derived in training from the trainer's fields (training/defaults.py `model_of`), so experiment
# files' `config.model` leaves them out; a stored config holds what its run used.
DERIVED_FIELDS = ("targets", "mxm", "contrastive", "regression_log_std")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  d_model: int
  num_layers: int
  num_heads: int
  d_ff: int


@dataclasses.dataclass(frozen=True)
class CompositionConfig(TransformerConfig):
  resolution: int = 5000      # CrabNet's fractional-encoding table size


@dataclasses.dataclass(frozen=True)
class FCNConfig:
  """PXRDPIAYN baselines, adapted to 4250 inputs: conv-LeakyReLU-maxpool-dropout blocks, one
  final convolution to `features` channels, a composition MLP over the fraction vector and a
  fusion MLP over the concatenation."""
  channels: tuple[int, ...]
  kernel_size: int
  features: int
  composition_hidden: tuple[int, ...]
  fusion_hidden: tuple[int, ...]


def _tuples(fields: dict) -> dict:
  """Lists (as JSON stores sequences) as tuples, which a frozen config can hash."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything a model is built from; its fields (nested as dicts) are what checkpoints store."""
  name: str                           # one of MODEL_NAMES
  composition: CompositionConfig
  xrd: TransformerConfig
  fusion: TransformerConfig
  crabnet_hidden: tuple[int, ...]     # CrabNet's residual output network (per element, then mean)
  fcn: FCNConfig
  targets: tuple[str, ...] = targets_lib.PAPER_TARGETS
  mxm: bool = False                   # the masked-XRD reconstruction head (models/heads.py)
  contrastive: bool = False           # the learnable temperature of contrastive pretraining
  # Regression heads also output `<target>_log_std` for regression_loss="robust_l1" (the crabnet
  # model always does; the others only with this set).
  regression_log_std: bool = False
  # "auto": bfloat16 on GPU/TPU, float32 on CPU. Parameters are always float32.
  dtype: str = "auto"
  dropout: float = 0.1
  remat: bool = False
  # Random bits per dropout decision (models/layers.py `LayerConfig`): 32 | 16 | 8. 16 bits draw
  # half the random numbers of flax's nn.Dropout (32) and keep with probability 58982/65536 =
  # 0.899994 at dropout 0.1, the paper's rate; 8 bits (230/256 = 0.8984) do not. On an H100 all
  # of dropout costs ~1-3 % of the paper-size step (benchmarks/RESULTS.md).
  dropout_bits: int = 16
  # Pallas kernels for the transformer layers' memory-bound glue (models/kernels/, issue 29):
  # attention with dropout in one kernel reading the fused projection's layout; LayerNorm(x +
  # dropout(h)) forward and backward in one kernel each; bias gradients by one tiled column sum.
  # Same parameters and dropout rate; off until the GPU sweep (benchmarks/gpu_session.sh
  # `kernels`) shows they pay. Outside a GPU they run in Pallas interpret mode (slow).
  fused_attention: bool = False
  fused_norm: bool = False
  fused_bias_grad: bool = False
  # XRD intensities (max 100) are multiplied by this before the model sees them; the MXM
  # reconstruction is in the same scaled units (see models/encoders.py `xrd_tokens`).
  xrd_scale: float = 0.01
  # "linear" (the paper) or "sqrt": a signed square root of the scaled intensities
  # (models/encoders.py `xrd_input`), which weighs weak reflections more.
  xrd_intensity: str = "linear"
  # How the XRD encoder embeds its tokens: "patch" (the paper: a linear projection of each of the
  # 17 tokens' 250 points), "conv" (strided 1-D convolutions over the whole pattern,
  # models/encoders.py `conv_stem`) or "peaks" (one token per peak, models/peak_tokens.py).
  xrd_stem: str = "patch"
  # With xrd_stem="peaks": the most prominent peaks read (one token each), and in training the
  # probability that each peak but the strongest is left out.
  xrd_max_peaks: int = 32
  xrd_peak_drop: float = 0.1
  # A learned embedding of the pattern's source added to every XRD token: simulated (stored or
  # CIF patterns) or measured (scans given to predict/evaluate --measured, and in training the
  # patterns the augmentation turned into measured-like ones). One model then keeps what it
  # reads from ideal patterns apart from what it reads from measured ones.
  xrd_measurement_embedding: bool = False
  # What XxaCT-NN's heads read: "fused_cls" (the paper: the fused XRD [CLS], where composition
  # arrives only through cross-attention) or "fused_and_composition_cls" (the composition
  # encoder's [CLS] concatenated to it).
  readout: str = "fused_cls"
  # ReLU layers before each target's output layer (XxaCT, XRD transformer, FCN); () = linear.
  head_hidden: tuple[int, ...] = ()
  # Output activation of the MXM reconstruction head: "softplus", "relu" (the paper) or "linear".
  # With ReLU the head dies early in pretraining: the masked targets are mostly ~0, every unit
  # is pushed below zero, and from then on its gradient is exactly 0 (on mp_36k at the small
  # size the gradient norm was 0 from step ~900 and the MXM loss never moved).
  # Softplus keeps the output non-negative with a gradient everywhere.
  mxm_activation: str = "softplus"

  def __post_init__(self):
    for field, value, known in (("name", self.name, MODEL_NAMES),
                                ("xrd_intensity", self.xrd_intensity, encoders.XRD_INTENSITIES),
                                ("xrd_stem", self.xrd_stem, encoders.XRD_STEMS),
                                ("mxm_activation", self.mxm_activation, MXM_ACTIVATIONS),
                                ("readout", self.readout, READOUTS),
                                ("dropout_bits", self.dropout_bits, layers.DROPOUT_BITS)):
      if value not in known:
        raise ValueError(f"Unknown model.{field} {value!r}; known: {list(known)}")
    layers.compute_dtype(self.dtype)
    for target in self.targets:
      targets_lib.get(target)  # Unknown targets fail here, before any tracing.

  @classmethod
  def from_config(cls, config: "ModelConfig | ml_collections.ConfigDict | dict") -> "ModelConfig":
    """The typed form of a model ConfigDict (or dict); fields it lacks are filled as in
    stored_config.upgrade, then the defaults."""
    if isinstance(config, cls):
      return config
    c = stored_config.upgrade(config.to_dict() if isinstance(config, ml_collections.ConfigDict)
                              else dict(config), "model.")
    unknown = sorted(set(c) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"Unknown model config fields {unknown}")
    return cls(**dict(_tuples(c), composition=CompositionConfig(**c["composition"]),
                      xrd=TransformerConfig(**c["xrd"]), fusion=TransformerConfig(**c["fusion"]),
                      fcn=FCNConfig(**_tuples(c["fcn"]))))

  def to_dict(self) -> dict[str, Any]:
    """Nested dicts: what `config.model` holds, and what a checkpoint stores."""
    return dataclasses.asdict(self)


def model_config(name: str, size: str = "paper") -> ml_collections.ConfigDict:
  """Returns the configuration of model `name` at `size` ("paper", "small" or "tiny").

  The paper's sizes (Sec. 3.1): CrabNet composition encoder d=512, 3 layers, 4 heads, FFN 2048;
  XRD encoder d=512, 3 layers, 4 heads, FFN 1024; fusion decoder d=768, 12 layers, 12 heads,
  FFN 2048. "small" (d_model 128, 2 layers everywhere; ~1 M parameters) is for experiments
  that train in well under an hour on a laptop CPU. "tiny" keeps every component with d_model
  32-64 and one layer, for CPU tests. The other fields are `ModelConfig`'s defaults, less the
  ones training derives (DERIVED_FIELDS).
  """
  if size not in SIZES:
    raise ValueError(f"Unknown model size {size!r}; known: {list(SIZES)}")
  by_size = dict(
      paper=dict(composition=(512, 3, 4, 2048), xrd=(512, 3, 4, 1024), fusion=(768, 12, 12, 2048),
                 crabnet_hidden=(1024, 512, 256, 128),
                 fcn=((16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512), 5, 64, (512, 512),
                      (256,))),
      small=dict(composition=(128, 2, 4, 256), xrd=(128, 2, 4, 256), fusion=(128, 2, 4, 256),
                 crabnet_hidden=(256, 128, 64),
                 fcn=((8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 128), 5, 32, (128,), (128,))),
      tiny=dict(composition=(32, 1, 2, 64), xrd=(32, 1, 2, 64), fusion=(48, 1, 2, 64),
                crabnet_hidden=(32, 16), fcn=((4,) * 10 + (8,), 5, 8, (16,), (16,))),
  )[size]
  typed = ModelConfig(
      name, CompositionConfig(*by_size["composition"]), TransformerConfig(*by_size["xrd"]),
      TransformerConfig(*by_size["fusion"]), by_size["crabnet_hidden"], FCNConfig(*by_size["fcn"]))
  c = typed.to_dict()
  for key in DERIVED_FIELDS:
    del c[key]
  return ml_collections.ConfigDict(c)


def model_class(name: str) -> type[nn.Module]:
  """The Flax module class of model `name`.

  Its class attributes declare the model: `uses_composition` and `uses_xrd` (the inputs it reads)
  and `embeddings` ({output key: what it is}, "embedding" first).
  """
  if name not in _MODELS:
    raise ValueError(f"Unknown model_config.name {name!r}; known: {list(MODEL_NAMES)}")
  return _MODELS[name]


def build_model(config: ModelConfig | ml_collections.ConfigDict | dict) -> nn.Module:
  """Returns the module; call it as model.apply(variables, species, fractions, xrd, ...)."""
  config = ModelConfig.from_config(config)
  return model_class(config.name)(config)
