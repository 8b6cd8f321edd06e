"""Shared experiment plumbing: every file in configs/ builds its config with `experiment`.

The training recipe (epochs, global batch, dropout, AdamW and its warmup-cosine schedule) is not
here: each config file states it (`RECIPE`), so the file a reader opens is the experiment. This
module holds what every run shares: data, logging, evaluation and checkpoint cadence, sharding,
and the `:runlocal` scaling for a CPU.
"""

import dataclasses
import os
from typing import Any

import ml_collections

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.data import augment


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a config argument such as "runlocal,target=band_gap" (big_vision style).

  A bare word sets a boolean default to True; `key=value` casts the value to the type of its default.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, _, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not value:
      if not isinstance(default, bool):
        raise ValueError(f"Config argument {key!r} needs a value ({key}=...)")
      result[key] = True
    elif isinstance(default, bool):
      result[key] = value.lower() in ("1", "true", "yes", "on")
    else:
      result[key] = type(default)(value)
  return result


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, as `--config=PATH:ARG` gives it (for notebooks, tests)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"xxact_jax_config_{name}", path)
  if spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"No config file at {path!r}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


RECIPE_FIELDS = ("num_epochs", "global_batch_size", "dropout", "optimizer")
OPTIMIZER_FIELDS = ("init_lr", "peak_lr", "end_lr", "warmup_fraction", "b1", "b2",
                    "weight_decay", "grad_clip_norm")


def base_config(*, model, objective: str, recipe: dict, targets=(),
                runlocal: bool = False) -> ml_collections.ConfigDict:
  """The common trainer configuration around a config file's recipe (see RECIPE_FIELDS)."""
  for fields, given, where in ((RECIPE_FIELDS, recipe, "RECIPE"),
                               (OPTIMIZER_FIELDS, recipe.get("optimizer", {}),
                                "RECIPE['optimizer']")):
    missing = [f for f in fields if f not in given]
    extra = [f for f in given if f not in fields]
    if missing or extra:
      raise ValueError(f"{where}: missing {missing}, unknown {extra}; expected {list(fields)}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.objective = objective            # supervised | mxm | contrastive | mxm_contrastive
  c.targets = tuple(targets)         # supervised targets; the heads the model builds
  # Multi-target training: each example is assigned one of its labelled targets uniformly at random
  # and contributes only that target's loss (the paper's uniform task sampling).
  c.task_sampling = "uniform"        # uniform | all (every labelled target of every example)
  c.regression_loss = "mse"          # mse | l1 | robust_l1 (CrabNet's; needs a log-std output)
  c.mxm_mask_ratio = 0.05            # of the 17 XRD tokens, at least one per sample
  c.model = model
  # Physics-based augmentation of the XRD batch inside the train step (data/augment.py has each
  # transform's parameter range and its source): off in the paper's configs, on in measured.py.
  c.augment = augment.default_config(enabled=False)

  c.data = ml_collections.ConfigDict()
  c.data.path = ""                   # "" = the embedded default dataset
  c.data.train_split = "train"
  c.data.eval_split = "test"
  # Train on a random fraction of the train split (the paper's Fig. 3), drawn from fraction_seed;
  # evaluation keeps the whole eval split.
  c.data.train_fraction = 1.0
  c.data.fraction_seed = 0
  # Comma-separated prepared datasets whose valid rows all join the training rows (e.g. random
  # crystals from `python -m xxact_jax.synthesize`); evaluation stays on data.path.
  c.data.extra_train = ""
  # Where the train step's XRD patterns come from: "stored" (the prepared patterns) or
  # "simulated" (computed again in the step from the structures a dataset prepared with
  # --store_structures holds, after augment.structure's per-reflection effects when augment is
  # on; data/resimulate.py). Evaluation reads the stored patterns either way.
  c.data.xrd_source = "stored"
  # Grain worker processes. 0 reads in this process, where TensorStore decodes a batch's rows on
  # its own threads: at batch 4,096 that outran 1 or 2 workers by ~2x, which pay to copy every
  # batch between processes (benchmarks/RESULTS.md, loader at the GPU batch size).
  c.data.worker_count = 0
  c.data.prefetch = 2                # batches staged on device ahead of the step

  c.global_batch_size = recipe["global_batch_size"]
  c.grad_accum_steps = 1
  c.num_epochs = recipe["num_epochs"]
  c.num_train_steps = -1             # > 0 overrides num_epochs
  c.eval_batch_size = 4_096
  c.optimizer = ml_collections.ConfigDict(dict(recipe["optimizer"]))
  c.model.dropout = recipe["dropout"]

  c.sharding = ml_collections.ConfigDict()
  c.sharding.fsdp = False            # shard parameters and optimiser state along the data axis

  # Initialisation from another run (finetune / transfer): parameters only.
  c.init_from = ""                   # a workdir holding checkpoints
  c.init_checkpoint = "latest"       # latest | best
  c.init_exclude = ()                # parameter collections not taken (e.g. ("heads",))
  c.trainable = ""                   # "" = everything; "heads" = freeze encoders and fusion

  c.log_every_steps = 100
  c.eval_every_steps = 1_000
  c.checkpoint_every_steps = 1_000
  c.keep_checkpoints = 3
  # A resumed run must be the run that was started: any change outside the logging/evaluation/
  # checkpoint cadence (training.train.RESUMABLE_CHANGES) is refused, with the list of
  # differences, unless this is set.
  c.resume_allow_changes = False
  c.best_metric = "eval/loss"        # lower is better
  c.tensorboard = True
  # Skip XLA's backend optimisation passes: for tiny CPU runs compiling costs more than it saves.
  c.xla_fast_compile = False

  if runlocal:
    c.xla_fast_compile = True
    c.global_batch_size = 64
    c.eval_batch_size = 256
    c.num_train_steps = 150
    c.log_every_steps = 10
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 50
    c.optimizer.peak_lr = 1e-3
  return c


REGRESSION_LOSSES = ("mse", "l1", "robust_l1")
OBJECTIVES = ("supervised", "mxm", "contrastive", "mxm_contrastive")
XRD_SOURCES = ("stored", "simulated")


def model_of(config: ml_collections.ConfigDict):
  """The typed model config of an experiment config (models/config.py `ModelConfig`).

  The trainer's fields say each fact once: `targets` gives the heads, `objective` the MXM and
  contrastive parts, and `regression_loss="robust_l1"` the log-σ outputs it needs; they are
  derived here, after command-line overrides, and `config.model` is left as it is. A value that
  cannot work is refused before anything is built or written, with what would work.
  """
  from xxact_jax.models import config as model_config_lib  # pylint: disable=g-import-not-at-top
  if config.objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {config.objective!r}; known: {list(OBJECTIVES)}")
  targets = targets_lib.check_names(config.targets, " in config.targets")
  if len(set(targets)) != len(targets):
    raise ValueError(f"config.targets {list(targets)} names a target twice")
  if config.objective == "supervised" and not targets:
    raise ValueError("objective='supervised' needs config.targets")
  loss = config.regression_loss
  if loss not in REGRESSION_LOSSES:
    raise ValueError(f"Unknown regression_loss {loss!r}; known: {list(REGRESSION_LOSSES)}")
  source = config.data.xrd_source
  if source not in XRD_SOURCES:
    raise ValueError(f"Unknown data.xrd_source {source!r}; known: {list(XRD_SOURCES)}")
  model = model_config_lib.ModelConfig.from_config(config.model)
  if config.objective != "supervised" and not model_config_lib.model_class(model.name).uses_xrd:
    raise ValueError(f"objective={config.objective!r} needs an XRD input; the {model.name} model "
                     "has none (use objective='supervised')")
  if model.xrd_stem == "peaks" and "mxm" in config.objective:
    raise ValueError("objective 'mxm' masks profile tokens; model.xrd_stem='peaks' has none "
                     "(use objective 'contrastive', or xrd_stem 'patch')")
  derived = dict(targets=tuple(targets), mxm="mxm" in config.objective,
                 contrastive="contrastive" in config.objective)
  if model.name != "crabnet":   # CrabNet's heads always output the log-σ
    derived["regression_log_std"] = loss == "robust_l1"
  return dataclasses.replace(model, **derived)


def experiment(model_name: str, objective: str, arg: str | None, *, recipe: dict,
               targets=targets_lib.PAPER_TARGETS, regression_loss: str = "mse",
               **extra_args: Any) -> ml_collections.ConfigDict:
  """Builds a config from `arg` = "[runlocal][,size=small][,targets=a+b][,init=DIR][,...]".

  `size` picks the model size (models/config.py: paper, small, tiny); runlocal implies tiny.
  `loss` sets the regression loss (mse | l1 | robust_l1; robust_l1 adds the log-std outputs).
  `targets` may be "paper" (formation energy + crystal system, the paper's multi-target setting),
  "all", or target names joined by "+".
  """
  from xxact_jax.models import model_config  # pylint: disable=g-import-not-at-top
  a = parse_arg(arg, runlocal=False, size="", loss="", targets="paper" if targets else "",
                init="", **extra_args)
  if a.targets == "paper":
    chosen = tuple(targets)
  elif a.targets == "all":
    chosen = constants.ALL_TARGETS
  else:
    chosen = tuple(t for t in a.targets.split("+") if t)
  targets_lib.check_names(chosen)
  # The model's targets, MXM, contrastive and log-σ parts follow from the trainer's fields
  # (`model_of`, at the start of training, after command-line overrides).
  model = model_config(model_name, size=a.size or ("tiny" if a.runlocal else "paper"))
  c = base_config(model=model, objective=objective, recipe=recipe, targets=chosen,
                  runlocal=a.runlocal)
  c.init_from = a.init
  loss = a.loss or regression_loss
  if loss not in REGRESSION_LOSSES:
    raise ValueError(f"Unknown loss {loss!r}; known: {list(REGRESSION_LOSSES)}")
  c.regression_loss = loss
  c.config_arg = arg or ""
  return c
