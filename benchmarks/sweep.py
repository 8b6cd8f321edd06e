r"""Fast-path sweep: benchmarks/train_step.py once per (config, variant), one table at the end.

  python benchmarks/sweep.py --out=/tmp/sweep.jsonl
  python benchmarks/sweep.py --configs=configs/supervised.py --variants=baseline,dropout_bits16 \
      --per_device_batch=4096 --out=/tmp/sweep.jsonl
  python benchmarks/sweep.py --out=/tmp/sweep.jsonl --table_only

Each variant is a set of config overrides on top of the config; every
run is its own process, so each compiles from scratch and no setting leaks into the next. Results
are appended to --out as one JSON line per run as soon as the run ends, and runs already in the
file are skipped: a sweep cut short (a time limit, a lost machine) resumes where it stopped. The
table gives each variant's samples/s per device against the baseline of the same config and batch.

On a machine shared with other work, `--rounds=N` runs the variants N times, every other round in
reverse order, and the table takes each variant's median: a load that comes and goes then falls on
all variants alike instead of on whichever ran at the time.
"""

import collections
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

import _common

# name -> (train_step.py flags, what it changes)
VARIANTS = {
    "baseline": ((), "the configs as they are"),
    "dropout_bits32": (("--config.model.dropout_bits=32",),
                       "flax's nn.Dropout: one 32-bit draw per dropout decision"),
    "dropout_bits16": (("--config.model.dropout_bits=16",),
                       "dropout masks from 16-bit draws (half the PRNG work of 32)"),
    "dropout_bits8": (("--config.model.dropout_bits=8",),
                      "dropout masks from 8-bit draws (a quarter of the PRNG work of 32)"),
    "no_dropout": (("--config.model.dropout=0.0",),
                   "dropout off: what all dropout costs (a bound, not a candidate)"),
    "remat": (("--config.model.remat=True",), "rematerialise every transformer layer"),
    "float32": (("--config.model.dtype=float32",), "no bfloat16 (what bf16 buys)"),
    "augment": (("--config.augment.enabled=True",),
                "the measured-pattern augmentation inside the step (what it costs)"),
    "fused_attention": (("--config.model.fused_attention=True",),
                        "attention + weight dropout in one Pallas kernel (models/kernels/)"),
    "fused_norm": (("--config.model.fused_norm=True",),
                   "LayerNorm(x + dropout(h)) forward and backward as one Pallas kernel each"),
    "fused_bias_grad": (("--config.model.fused_bias_grad=True",),
                        "dense bias gradients by one tiled column-sum Pallas kernel"),
    "fused_all": (("--config.model.fused_attention=True", "--config.model.fused_norm=True",
                   "--config.model.fused_bias_grad=True"), "the three kernels together"),
}
# The kernel switches against the baseline (gpu_session.sh `kernels`).
KERNEL_VARIANTS = ("baseline", "fused_attention", "fused_norm", "fused_bias_grad", "fused_all")
DEFAULT_VARIANTS = ("baseline", "dropout_bits32", "dropout_bits8", "no_dropout", "remat")

_CONFIGS = flags.DEFINE_list("configs", ["configs/supervised.py", "configs/mxm_contrastive.py"],
                             "Config files (with :ARG) to sweep.")
_VARIANTS = flags.DEFINE_list("variants", list(DEFAULT_VARIANTS),
                              f"Variants to run, from {sorted(VARIANTS)}.")
_CUSTOM = flags.DEFINE_multi_string(
    "custom", [], "Extra variant NAME=FLAG[;FLAG...], e.g. "
    "fast=--config.model.dropout_bits=8;--config.model.remat=True. An item VAR=VALUE (no leading "
    "--) sets an environment variable of the run, e.g. "
    "notriton=XLA_FLAGS=--xla_gpu_enable_triton_gemm=false")
_RUNS = flags.DEFINE_list(
    "runs", [], "Explicit CONFIG@VARIANT runs instead of every config with every variant, e.g. "
    "configs/supervised.py@baseline,configs/mxm_contrastive.py@baseline")
_OUT = flags.DEFINE_string("out", None, "JSON-lines file the results are appended to.")
_PER_DEVICE_BATCH = flags.DEFINE_integer("per_device_batch", None,
                                         "Passed to train_step.py (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_DATA = flags.DEFINE_string("data", None, "Also time each run fed by the loader from DIR.")
_TIMEOUT = flags.DEFINE_integer("timeout", 900, "Seconds allowed per run.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Print the table of --out and stop.")
_RERUN = flags.DEFINE_bool("rerun", False, "Run variants even if --out already has them.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Runs of each variant, in alternating order; the "
                               "table reports the median.")
_PRECOMPILE_JOBS = flags.DEFINE_integer(
    "precompile_jobs", 0, "If > 0, first compile every planned run this many at a time into "
    "the persistent compilation cache (JAX_COMPILATION_CACHE_DIR, default "
    "/tmp/xxact_jax_sweep_cache), then time the runs one at a time: compiling is CPU work that "
    "overlaps, timing needs the device alone. The table's compile column is then the cold "
    "compile of the first phase.")
flags.mark_flag_as_required("out")

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_custom(specs) -> dict:
  custom = {}
  for spec in specs:
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
      raise ValueError(f"--custom={spec!r}: expected NAME=FLAG[;FLAG...]")
    if name in VARIANTS:
      raise ValueError(f"--custom name {name!r} is a built-in variant")
    items = tuple(f for f in rest.split(";") if f)
    split_env(items)   # a malformed item is an error now, not when its run starts
    custom[name] = (items, "custom: " + rest)
  return custom


def split_env(items) -> tuple[tuple, dict]:
  """(train_step.py flags, environment variables) of a variant's items."""
  flags_, env = [], {}
  for item in items:
    if item.startswith("-"):
      flags_.append(item)
    else:
      name, sep, value = item.partition("=")
      if not sep or not name.replace("_", "").isalnum():
        raise ValueError(f"variant item {item!r}: expected --flag=value or VAR=VALUE")
      env[name] = value
  return tuple(flags_), env


def run_key(config: str, variant: str, per_device_batch) -> tuple:
  return (config, variant, per_device_batch)


def read_runs(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  runs = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        runs.append(json.loads(line))
      except json.JSONDecodeError:
        # A line cut short by a kill mid-write: the run is redone.
        _common.progress(f"{path}:{number}: not JSON, ignored")
  return runs


def append_run(path: str, record: dict):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def benchmark_command(config: str, flags_: tuple, per_device_batch, steps, repeats, warmup,
                      data) -> list[str]:
  cmd = [sys.executable, os.path.join(HERE, "train_step.py"), f"--config={config}",
         f"--steps={steps}", f"--repeats={repeats}", f"--warmup={warmup}", *flags_]
  if per_device_batch is not None:
    cmd.append(f"--per_device_batch={per_device_batch}")
  if data:
    cmd.append(f"--data={data}")
  return cmd


def run_one(config, variant, spec, per_device_batch, steps, repeats, warmup, data,
            timeout, cold_compile=None) -> dict:
  flags_, env = split_env(spec[0])
  cmd = benchmark_command(config, flags_, per_device_batch, steps, repeats, warmup, data)
  record = {"config": config, "variant": variant, "per_device_batch": per_device_batch,
            "flags": list(flags_), "env": env, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  if cold_compile is not None:
    record["cold_compile_seconds"] = cold_compile
  t0 = time.perf_counter()
  try:
    process = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **env})
  except subprocess.TimeoutExpired:
    record.update(ok=False, error=f"timed out after {timeout} s")
    return record
  record["wall_seconds"] = time.perf_counter() - t0
  lines = process.stdout.strip().splitlines()
  if process.returncode != 0 or not lines:
    tail = (process.stderr or process.stdout).strip().splitlines()[-6:]
    record.update(ok=False, error=" | ".join(tail)[-600:])
    return record
  try:
    record["result"] = json.loads(lines[-1])
  except json.JSONDecodeError:
    record.update(ok=False, error="no JSON result line: " + lines[-1][-300:])
    return record
  record["ok"] = True
  return record


def precompile(plan, variants, per_device_batch, jobs: int, timeout) -> dict:
  """Compiles each distinct planned run, `jobs` processes at a time, into the persistent cache.

  Returns (config, variant) -> cold compile seconds, or the error where the compile failed or
  ran out of time (the timed run is then skipped)."""
  pending = list(dict.fromkeys(plan))
  running, seconds = [], {}
  # Several processes share the device while compiling: none may take most of its memory.
  base_env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  start = time.perf_counter()
  while pending or running:
    while pending and len(running) < jobs:
      config, variant = pending.pop(0)
      flags_, env = split_env(variants[variant][0])
      cmd = benchmark_command(config, flags_ + ("--compile_only",), per_device_batch, 1, 1, 0,
                              None)
      proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**base_env, **env})
      running.append(((config, variant), proc, time.perf_counter()))
    time.sleep(0.5)
    for item in list(running):
      key, proc, t0 = item
      if proc.poll() is None and time.perf_counter() - t0 < timeout:
        continue
      if proc.poll() is None:
        proc.kill()
      out, err = proc.communicate()
      running.remove(item)
      lines = out.strip().splitlines()
      try:
        seconds[key] = json.loads(lines[-1])["compile_seconds"]
        status = f"compiled in {seconds[key]:.1f} s"
      except (IndexError, ValueError, KeyError):
        seconds[key] = "compile failed: " + " | ".join(err.strip().splitlines()[-3:])[-300:]
        status = seconds[key]
      _common.progress(f"  precompile {key[0]} / {key[1]}: {status} "
                       f"({time.perf_counter() - start:.0f} s elapsed)")
  return seconds


def _rate(record: dict, feed: str = "synthetic"):
  result = record.get("result") or {}
  return (result.get(feed) or {}).get("samples_per_s_per_device")


def plan_runs(configs, variants, rounds: int, done: collections.Counter, per_device_batch,
              rerun: bool, pairs=()) -> list[tuple]:
  """(config, variant) runs still to do: round r covers variants whose r-th run is missing, in
  forward order on even rounds and reverse order on odd ones. `pairs` ((config, variant), ...)
  replaces every config with every variant."""
  pairs = list(pairs) or [(c, v) for c in configs for v in variants]
  plan = []
  for r in range(rounds):
    for config, variant in (pairs if r % 2 == 0 else pairs[::-1]):
      if rerun or done[run_key(config, variant, per_device_batch)] <= r:
        plan.append((config, variant))
  return plan


def _fmt_rate(rate: float) -> str:
  return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def _median_run(runs: list[dict]) -> dict:
  """The run with the median rate (the lower middle one of an even count)."""
  ordered = sorted(runs, key=_rate)
  return ordered[(len(ordered) - 1) // 2]


def table(runs: list[dict]) -> str:
  """Markdown table: per (config, variant, batch) the median of its successful runs (or its last
  failure), against the baseline of the same config and batch."""
  grouped = collections.defaultdict(list)
  for r in runs:
    grouped[run_key(r["config"], r["variant"], r.get("per_device_batch"))].append(r)
  shown, counts = {}, {}
  for key, group in grouped.items():
    ok = [r for r in group if r.get("ok")]
    shown[key] = _median_run(ok) if ok else group[-1]
    counts[key] = len(ok)
  baselines = {(k[0], k[2]): _rate(r) for k, r in shown.items() if k[1] == "baseline"}
  compile_s = lambda r: r.get("cold_compile_seconds", r["result"]["compile_seconds"])
  rows = ["| config | variant | per-device batch | runs | samples/s/device | vs baseline | MFU | "
          "loader-fed / synthetic | compile s | peak memory GB |",
          "|---|---|---|---|---|---|---|---|---|---|"]
  baselines_first = lambda kv: (kv[0][0], str(kv[0][2]), kv[0][1] != "baseline", kv[0][1])
  for (config, variant, batch), r in sorted(shown.items(), key=baselines_first):
    if not r.get("ok"):
      rows.append(f"| `{config}` | {variant} | {batch or 'config'} | 0 | "
                  f"failed: {r.get('error', '?')[:160]} | | | | | |")
      continue
    res = r["result"]
    rate = _rate(r)
    base = baselines.get((config, batch))
    ratio = f"{rate / base:.3f}" if base else "n/a"
    mfu = res["synthetic"].get("mfu")
    memory = res.get("peak_device_memory_bytes") or res.get("xla_memory_estimate_bytes")
    loader = res.get("data_to_synthetic_ratio")
    rows.append(
        f"| `{config}` | {variant} | {res['per_device_batch']} | "
        f"{counts[(config, variant, batch)]} | {_fmt_rate(rate)} | {ratio} | "
        f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'} | "
        f"{'n/a' if loader is None else f'{loader:.3f}'} | {compile_s(r):.1f} | "
        f"{'n/a' if memory is None else f'{memory / 1e9:.2f}'} |")
  return "\n".join(rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  out = _OUT.value
  if _TABLE_ONLY.value:
    print(table(read_runs(out)))
    return
  try:
    variants = {**VARIANTS, **parse_custom(_CUSTOM.value)}
  except ValueError as e:
    sys.exit(f"sweep.py: {e}")
  pairs = [tuple(r.rsplit("@", 1)) for r in _RUNS.value]
  if any(len(p) != 2 for p in pairs):
    sys.exit(f"sweep.py: --runs entries are CONFIG@VARIANT, got {_RUNS.value}")
  chosen = ([v for _, v in pairs] if pairs else
            list(_VARIANTS.value) + [s.partition("=")[0] for s in _CUSTOM.value])
  unknown = [v for v in chosen if v not in variants]
  if unknown:
    sys.exit(f"sweep.py: unknown variant(s) {unknown}; known: {sorted(variants)}")
  if _ROUNDS.value < 1:
    sys.exit("sweep.py: --rounds must be positive")
  done = collections.Counter(run_key(r["config"], r["variant"], r.get("per_device_batch"))
                             for r in read_runs(out) if r.get("ok"))
  plan = plan_runs(_CONFIGS.value, chosen, _ROUNDS.value, done, _PER_DEVICE_BATCH.value,
                   _RERUN.value, pairs)
  _common.progress(f"sweep: {len(plan)} run(s) to do, results appended to {out}")
  cold = {}
  if _PRECOMPILE_JOBS.value > 0 and plan:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/xxact_jax_sweep_cache")
    _common.progress(f"precompiling {len(set(plan))} step(s), {_PRECOMPILE_JOBS.value} at a time, "
                     f"into {os.environ['JAX_COMPILATION_CACHE_DIR']}")
    cold = precompile(plan, variants, _PER_DEVICE_BATCH.value, _PRECOMPILE_JOBS.value,
                      _TIMEOUT.value)
  start = time.perf_counter()
  for i, (config, variant) in enumerate(plan):
    _common.progress(f"[{i + 1}/{len(plan)}] {config} / {variant}: {variants[variant][1]}")
    cold_compile = cold.get((config, variant))
    if isinstance(cold_compile, str):
      record = {"config": config, "variant": variant, "per_device_batch": _PER_DEVICE_BATCH.value,
                "ok": False, "error": cold_compile}
    else:
      record = run_one(config, variant, variants[variant], _PER_DEVICE_BATCH.value,
                       _STEPS.value, _REPEATS.value, _WARMUP.value, _DATA.value, _TIMEOUT.value,
                       cold_compile)
    append_run(out, record)
    elapsed = time.perf_counter() - start
    status = (f"{_fmt_rate(_rate(record))} samples/s/device" if record.get("ok")
              else f"failed: {record['error'][:200]}")
    _common.progress(f"    {status}; {elapsed:.0f} s elapsed, ETA "
                     f"{elapsed / (i + 1) * (len(plan) - i - 1):.0f} s")
  print(table(read_runs(out)))


if __name__ == "__main__":
  app.run(main)
