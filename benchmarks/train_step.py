r"""Train-step throughput: the trainer's jitted, sharded, donated step on synthetic or real batches.

  python benchmarks/train_step.py --config=configs/supervised.py:runlocal
  python benchmarks/train_step.py --config=configs/mxm_contrastive.py --per_device_batch=4096
  python benchmarks/train_step.py --config=configs/supervised.py:runlocal --data=DIR

The step is built as `xxact_jax.training.train` builds it (same init, optimiser, shardings,
donation), compiled once, then timed over `--steps` steps per repeat on device-resident synthetic
batches of the real shapes and dtypes; the figure is the median of `--repeats` repeats after
`--warmup` untimed steps. With `--data=DIR` the same step is also fed from the Grain/TensorStore
loader with the next batch staged on device while the step runs, and the ratio of the two rates
shows what the input pipeline costs. With `--config.data.xrd_source=simulated` (and `--data` of a
dataset prepared with --store_structures) the step computes its patterns from the stored
structures, and the fixed batches are two of the dataset's:

  python benchmarks/train_step.py --config=configs/measured.py:size=small --data=DIR \
      --config.data.xrd_source=simulated
The last line of stdout is a JSON object with every figure.
"""

import functools
import gzip
import itertools
import json
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

import _common
from xxact_jax import constants
from xxact_jax.models import layers as model_layers
from xxact_jax.training import defaults
from xxact_jax.training import flops as flops_lib
from xxact_jax.training import setup as setup_lib
from xxact_jax.training import sharding as sharding_lib
from xxact_jax.training import step as step_lib
from xxact_jax.training import train as train_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_PER_DEVICE_BATCH = flags.DEFINE_integer(
    "per_device_batch", None, "Examples per device per step (default: the config's global batch "
    "divided by the device count).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats; the median is reported.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_MAX_ELEMENTS = flags.DEFINE_integer(
    "max_elements", None, "Element slots K of synthetic batches (default 10; with --data, the "
    "dataset's max_elements).")
_DATA = flags.DEFINE_string("data", None, "Prepared dataset: also time the step fed by the loader.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", None, "After timing, trace --profile_steps synthetic steps with jax.profiler "
    "into this directory (TensorBoard/XProf files and a Perfetto trace).")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 5, "Steps in the --profile_dir trace.")
_DUMP_HLO = flags.DEFINE_string(
    "dump_hlo", None, "Write the optimised HLO of the compiled step to this .gz file (to map "
    "the kernels of a --profile_dir trace to the program's ops).")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Compile the step, report the compile time and stop (with a "
    "persistent compilation cache, later runs of the same step load it instead of compiling).")
flags.mark_flag_as_required("config")

DEFAULT_MAX_ELEMENTS = 10
# Synthetic compositions have 1..this many elements, as most inorganic crystals do.
SYNTHETIC_MAX_ELEMENTS_PRESENT = 6
SYNTHETIC_PEAKS = 24


def synthetic_patterns(key, batch_size: int) -> jax.Array:
  """[B, 4250]: a few Gaussian peaks of the dataset's width, max 100, zero elsewhere (as real
  smeared patterns are: most of a real pattern is exactly 0)."""
  k_pos, k_height = jax.random.split(key)
  positions = jax.random.randint(k_pos, (SYNTHETIC_PEAKS, batch_size, 1), 0,
                                 constants.NUM_XRD_POINTS)
  heights = jax.random.uniform(k_height, (SYNTHETIC_PEAKS, batch_size, 1), minval=0.05)
  grid = jnp.arange(constants.NUM_XRD_POINTS)[None, :]
  width = constants.XRD_SIGMA / constants.TWO_THETA_STEP     # sigma in grid points
  xrd = jnp.zeros((batch_size, constants.NUM_XRD_POINTS), jnp.float32)
  for p in range(SYNTHETIC_PEAKS):     # one [B, 4250] term at a time keeps big batches small
    xrd += heights[p] * jnp.exp(-0.5 * jnp.square((grid - positions[p]) / width))
  return 100.0 * xrd / xrd.max(axis=-1, keepdims=True)


def synthetic_batch_fn(batch_size: int, max_elements: int, targets):
  """key -> a random batch with the shapes and dtypes of `step.batch_struct`."""
  struct = step_lib.batch_struct(batch_size, max_elements, targets)

  def make(key):
    keys = iter(jax.random.split(key, 4 + len(targets)))
    present_max = min(max_elements, SYNTHETIC_MAX_ELEMENTS_PRESENT)
    n = jax.random.randint(next(keys), (batch_size, 1), 1, present_max + 1)
    present = jnp.arange(max_elements)[None, :] < n
    species = jnp.where(present, jax.random.randint(next(keys), present.shape, 1, 95), 0)
    raw = jnp.where(present, jax.random.uniform(next(keys), present.shape, minval=0.05), 0.0)
    raw = -jnp.sort(-raw, axis=-1)                     # descending; padding (0) stays last
    xrd = synthetic_patterns(next(keys), batch_size)
    batch = {"species": species, "fractions": raw / raw.sum(-1, keepdims=True), "xrd": xrd}
    for t in targets:
      k = next(keys)
      if t == "spacegroup_number":
        batch[t] = jax.random.randint(k, (batch_size,), 1, 231)
      elif t in constants.CLASSIFICATION_TARGETS:
        batch[t] = jax.random.randint(k, (batch_size,), 0, constants.CLASSIFICATION_TARGETS[t])
      else:
        batch[t] = jax.random.normal(k, (batch_size,))
    return {k: batch[k].astype(s.dtype) for k, s in struct.items()}

  return make


def device_peak_memory(devices) -> int | None:
  """Largest peak_bytes_in_use over local devices, where the backend reports it (not on CPU)."""
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


def compiled_memory(compiled) -> int | None:
  """XLA's static estimate for one device: arguments + outputs + temporaries - aliased (donated)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Not implemented on every backend.
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


class StepTimer:
  """Runs the compiled step on batches from `take()`, calling `refill()` while the device works."""

  def __init__(self, compiled, state, global_batch: int):
    self.compiled, self.state, self.global_batch = compiled, state, global_batch
    self.last_loss = {}

  def run(self, steps, take, refill, label):
    metrics = None
    for _ in range(steps):
      self.state, metrics = self.compiled(self.state, take())
      refill()
    jax.block_until_ready((self.state, metrics))
    self.last_loss[label] = metrics["loss"] if metrics is not None else None

  def measure(self, feeds: dict, steps: int, repeats: int, warmup: int) -> dict:
    """feeds: label -> (take, refill). Returns label -> figures (median over repeats)."""
    for label, (take, refill) in feeds.items():
      self.run(warmup, take, refill, label)
    seconds = _common.timed_repeats(
        {label: functools.partial(self.run, steps, take, refill, label)
         for label, (take, refill) in feeds.items()}, repeats)
    figures = {}
    for label, times in seconds.items():
      loss = float(jax.device_get(self.last_loss[label]))
      if not np.isfinite(loss):
        raise FloatingPointError(f"{label} batches: the loss is {loss} after the timed steps")
      steps_per_s = steps / statistics.median(times)
      figures[label] = {
          "steps_per_s": steps_per_s, "samples_per_s": steps_per_s * self.global_batch,
          "samples_per_s_per_device": steps_per_s * self.global_batch / jax.device_count(),
          "seconds_per_repeat": times, "final_loss": loss}
    return figures


def loader_feed(config, ds, batch_sharding):
  """(take, refill): the trainer's batch stream (training/setup.py `TrainBatches`)."""
  batches = setup_lib.TrainBatches(config, ds, batch_sharding)
  return batches.take, batches.refill


def with_mfu(figures: dict, step_flops_per_device, peak) -> dict:
  figures["mfu"] = (step_flops_per_device * figures["steps_per_s"] / peak
                    if step_flops_per_device and peak else None)
  return figures


def dataset_and_stats(config, data_path, max_elements):
  """(train split or None, K, regression target statistics) as the trainer derives them."""
  if not data_path:
    stats = {t: {"mean": 0.0, "std": 1.0} for t in config.targets
             if t in constants.REGRESSION_TARGETS}
    return None, max_elements or DEFAULT_MAX_ELEMENTS, stats
  config.data.path = data_path
  data_path, ds, _ = train_lib.open_splits(config)
  dataset_k = int(ds.metadata["max_elements"])
  if max_elements is not None and max_elements != dataset_k:
    raise ValueError(f"--max_elements={max_elements} but the dataset at {data_path!r} has "
                     f"max_elements={dataset_k}; leave --max_elements out with --data")
  return ds, dataset_k, train_lib.target_statistics(ds.metadata, config.targets, data_path)


def build_train_step(config, mesh, max_elements, target_stats, scattering=None):
  """(initial state, jitted step, parameter count): the trainer's own `create_train_state`."""
  total_steps = config.num_train_steps if config.num_train_steps > 0 else 100_000
  trainer = setup_lib.create_train_state(config, defaults.model_of(config), mesh, max_elements,
                                         target_stats, total_steps, scattering)
  return trainer.init(jax.random.key(config.seed)), trainer.train_step, trainer.num_params


def profile_steps(timer: "StepTimer", take, steps: int, directory: str) -> str:
  """Traces `steps` steps after the timed ones; returns the directory."""
  jax.profiler.start_trace(directory, create_perfetto_trace=True)
  try:
    timer.run(steps, take, lambda: None, "profile")
  finally:
    jax.profiler.stop_trace()
  return directory


def benchmark(config, per_device_batch, steps, repeats, warmup, max_elements, data_path,
              profile_dir=None, num_profile_steps=5, compile_only=False, hlo_path=None) -> dict:
  defaults.model_of(config)    # refuses a config training would refuse, before any data is read
  mesh = sharding_lib.make_mesh()
  num_devices = mesh.shape[sharding_lib.DATA_AXIS]
  if per_device_batch is None:
    per_device_batch = max(1, config.global_batch_size // num_devices)
  if per_device_batch < 1 or steps < 1 or repeats < 1 or warmup < 0:
    raise ValueError("--per_device_batch, --steps and --repeats must be positive and --warmup "
                     f"non-negative (got {per_device_batch}, {steps}, {repeats}, {warmup})")
  global_batch = per_device_batch * num_devices
  config.global_batch_size = global_batch
  sharding_lib.check_batch_divisible(global_batch, mesh, config.grad_accum_steps)
  ds, max_elements, target_stats = dataset_and_stats(config, data_path, max_elements)
  simulated = step_lib.simulates_xrd(config)
  if simulated and ds is None:
    raise ValueError("--config.data.xrd_source=simulated needs --data: a dataset prepared with "
                     "--store_structures")
  scattering = train_lib.scattering_parameters(config, ds, data_path) if simulated else None
  state, train_step, num_params = build_train_step(config, mesh, max_elements, target_stats,
                                                   scattering)

  batch_sharding = sharding_lib.batch_sharding(mesh)
  if simulated:
    # The step needs real structures: the fixed batches are two of the dataset's, on device.
    stream = setup_lib.TrainBatches(config, ds, batch_sharding)
    batches = []
    for _ in range(2):
      batches.append(stream.take())
      stream.refill()
  else:
    make_batch = jax.jit(synthetic_batch_fn(global_batch, max_elements, tuple(config.targets)),
                         out_shardings=batch_sharding)
    # Two batches alternate so that no step sees the previous step's inputs again.
    batches = [make_batch(jax.random.key(i)) for i in range(2)]
  _common.progress(f"Compiling the train step: {config.model.name}, objective "
                   f"{config.objective}, {num_params / 1e6:.2f} M parameters, global batch "
                   f"{global_batch} on {num_devices} device(s)")
  t0 = time.perf_counter()
  compiled = train_step.lower(state, batches[0]).compile()
  compile_seconds = time.perf_counter() - t0
  step_flops = flops_lib.step_flops_per_device(train_step, (state, batches[0]), num_devices)
  if hlo_path:
    with gzip.open(hlo_path, "wt") as f:
      f.write(compiled.as_text())
  peak = flops_lib.peak_flops_per_device(jax.devices()[0])
  if compile_only:
    return {"config": config.get("config_arg", ""), "model": config.model.name,
            "per_device_batch": per_device_batch, "compile_seconds": compile_seconds,
            "step_flops_per_device": step_flops,
            "xla_memory_estimate_bytes": compiled_memory(compiled),
            "compilation_cache_dir": jax.config.jax_compilation_cache_dir or None,
            **_common.environment()}

  timer = StepTimer(compiled, state, global_batch)
  feeds = {"synthetic": (functools.partial(next, itertools.cycle(batches)), lambda: None)}
  if ds is not None:
    feeds["data"] = loader_feed(config, ds, batch_sharding)
  figures = timer.measure(feeds, steps, repeats, warmup)
  profile = (profile_steps(timer, feeds["synthetic"][0], num_profile_steps, profile_dir)
             if profile_dir else None)
  result = {
      "config": config.get("config_arg", ""), "model": config.model.name,
      "objective": config.objective, "targets": list(config.targets),
      "compute_dtype": jnp.dtype(model_layers.compute_dtype(config.model.dtype)).name,
      "num_params": num_params, "per_device_batch": per_device_batch,
      "global_batch": global_batch, "max_elements": max_elements, "steps": steps,
      "repeats": repeats, "warmup": warmup, "compile_seconds": compile_seconds,
      # XLA analyses the per-device program of the SPMD-partitioned step.
      "step_flops_per_device": step_flops,
      "flops_per_sample": step_flops / per_device_batch if step_flops else None,
      "peak_flops_per_device": peak,
  }
  for label, f in figures.items():
    result[label] = with_mfu(f, step_flops, peak)
  if ds is not None:
    result["data_path"] = config.data.path
    result["data_worker_count"] = config.data.worker_count
    result["data_to_synthetic_ratio"] = (result["data"]["samples_per_s"]
                                         / result["synthetic"]["samples_per_s"])
  result["peak_device_memory_bytes"] = device_peak_memory(jax.local_devices())
  result["xla_memory_estimate_bytes"] = compiled_memory(compiled)
  # A persistent compilation cache turns compile_seconds into a cache load.
  result["compilation_cache_dir"] = jax.config.jax_compilation_cache_dir or None
  result["profile_dir"] = profile
  result.update(_common.environment())
  return result


def _fmt(value, unit=""):
  if value is None:
    return "n/a"
  return f"{value:,.4g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def summary_lines(r: dict) -> list[str]:
  per_device_gflop = r["step_flops_per_device"] and r["step_flops_per_device"] / 1e9
  sample_gflop = r["flops_per_sample"] and r["flops_per_sample"] / 1e9
  peak_tflops = r["peak_flops_per_device"] and r["peak_flops_per_device"] / 1e12
  lines = [f"{r['model']} / {r['objective']} ({r['config'] or 'default'}), "
           f"{r['num_params'] / 1e6:.2f} M parameters, compute {r['compute_dtype']}",
           f"device: {r['num_devices']} x {r['device_kind']} ({r['host_cpu']}); "
           f"jax {r['jax']}, flax {r['flax']}, optax {r['optax']}",
           f"global batch {r['global_batch']} ({r['per_device_batch']} per device), K="
           f"{r['max_elements']}, median of {r['repeats']} x {r['steps']} steps",
           f"compile: {r['compile_seconds']:.1f} s; XLA cost analysis: {_fmt(per_device_gflop)} "
           f"GFLOP/step/device, {_fmt(sample_gflop)} GFLOP/sample; device peak "
           f"{_fmt(peak_tflops)} TFLOP/s",
           f"memory: device peak {_fmt(r['peak_device_memory_bytes'])} B, XLA estimate "
           f"{_fmt(r['xla_memory_estimate_bytes'])} B"]
  for name in ("synthetic", "data"):
    if name in r:
      f = r[name]
      mfu = "n/a" if f["mfu"] is None else f"{100 * f['mfu']:.1f}%"
      lines.append(f"{name:>9}: {f['steps_per_s']:.3f} steps/s, {f['samples_per_s']:,.0f} "
                   f"samples/s, {f['samples_per_s_per_device']:,.0f} samples/s/device, MFU {mfu}")
  if "data_to_synthetic_ratio" in r:
    lines.append(f"loader-fed / synthetic: {r['data_to_synthetic_ratio']:.3f}")
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sharding_lib.maybe_initialize_distributed()
  try:
    result = benchmark(_CONFIG.value, _PER_DEVICE_BATCH.value, _STEPS.value, _REPEATS.value,
                       _WARMUP.value, _MAX_ELEMENTS.value, _DATA.value, _PROFILE_DIR.value,
                       _PROFILE_STEPS.value, _COMPILE_ONLY.value, _DUMP_HLO.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"train_step.py: {e}")
  if jax.process_index() == 0:
    if not _COMPILE_ONLY.value:
      print("\n".join(summary_lines(result)))
    print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
