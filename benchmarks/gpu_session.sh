#!/usr/bin/env bash
# One GPU session of the runbook in benchmarks/RESULTS.md: measures, profiles and sweeps the
# train step on the machine at hand and leaves every figure under OUT_DIR.
#
#   bash benchmarks/gpu_session.sh STAGE [OUT_DIR=$OUT]
#
# STAGE is a comma-separated list of:
#   setup     install the wheels of .whl (grain, ml_collections, ...) into /tmp/site
#   baseline  the paper-size supervised step at 4,096 per device, synthetic and loader-fed
#             (.gpudata/mp6k), with a profile summarised into OUT_DIR/profile.md
#   torch     the PyTorch peer (../shared/reference/torch_ref.py, or a copy carried in
#             .gpudata/), eager and torch.compile, at the same batch
#   sweep     benchmarks/sweep.py over the fast-path variants (SWEEP_VARIANTS, SWEEP_CUSTOM,
#             SWEEP_CONFIGS, SWEEP_BATCH), compiled in parallel first
#   hlo       the optimised HLO of the default supervised step, OUT_DIR/hlo.txt.gz
#   keepcache the persistent compilation cache as OUT_DIR/jax_cache.tar (if under 15 MB)
#   final     both configs at their defaults, synthetic and loader-fed, batch 4,096 and 8,192
#   simulated configs/measured.py with stored against simulated patterns (data.xrd_source), fed
#             from a dataset with stored structures (SIM_DATA, default .gpudata/mp4k_s)
#   kernelcheck  tests/test_fused_kernels.py on the device (the Pallas kernels compiled by Triton
#             against the einsum/XLA path), OUT_DIR/kernelcheck.out
#   kernels   benchmarks/sweep.py: the baseline against each kernel switch (model.fused_attention,
#             fused_norm, fused_bias_grad) and all together, KERNEL_ROUNDS (2) rounds in alternating
#             order, one train_step.py binary, OUT_DIR/kernels.jsonl; with a profile of fused_all
#             (OUT_DIR/profile_fused.md) if KERNEL_PROFILE=1
# setup also runs benchmarks/gpu_preflight.py: what the stages need against what the machine
# has (modules and where they come from, carried data, the PyTorch peer), OUT_DIR/preflight.json.
# Each stage is skipped if fewer than its estimated seconds remain of DEADLINE (default 570 s
# from the start), so a time-limited call ends with whatever finished written out.
#
# DRY_RUN=1 runs the same stages on this CPU with the tiny `:runlocal` model, per-device batch 8
# and 1-2 steps (tests/test_gpu_session.py runs it in CI, so the script cannot rot between GPU
# sessions); DATA then defaults to the embedded sample.
set -u
STAGES="${1:-setup,baseline}"
OUT_DIR="${2:-${OUT:-/tmp/gpu_session}}"
mkdir -p "$OUT_DIR"
DEADLINE="${DEADLINE:-570}"
START=$(date +%s)
LOG="$OUT_DIR/session.log"
DRY_RUN="${DRY_RUN:-0}"
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ $DRY_RUN == 1 ]]; then
  SIZE=":runlocal"; BATCH="${BATCH:-8}"; STEPS="${STEPS:-2}"; REPEATS="${REPEATS:-1}"
  WARMUP="${WARMUP:-1}"; PRECOMPILE_JOBS="${PRECOMPILE_JOBS:-0}"
  DATA="${DATA:-$(python3 -c 'from xxact_jax.data import default_dataset_path as p; print(p())' 2>/dev/null)}"
else
  SIZE=""; BATCH="${BATCH:-4096}"; STEPS="${STEPS:-20}"; REPEATS="${REPEATS:-3}"
  WARMUP="${WARMUP:-3}"; PRECOMPILE_JOBS="${PRECOMPILE_JOBS:-4}"
  DATA="${DATA:-.gpudata/mp6k}"
fi
SUPERVISED="configs/supervised.py$SIZE"
MXM="configs/mxm_contrastive.py$SIZE"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}"
export PYTHONUNBUFFERED=1

left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
say() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
fits() {  # fits NAME SECONDS: true if SECONDS remain
  if (( $(left) < $2 )); then say "skip $1: $(left) s left, needs ~$2 s"; return 1; fi
  say "start $1 ($(left) s left)"
}
has() { [[ ",$STAGES," == *",$1,"* ]]; }

torch_ref() {
  for f in ../shared/reference/torch_ref.py .gpudata/torch_ref.py; do
    [[ -f $f ]] && { echo "$f"; return; }
  done
}

if has setup; then
  if [[ -f .gpudata/jax_cache.tar ]]; then
    mkdir -p "$JAX_COMPILATION_CACHE_DIR" && tar -xf .gpudata/jax_cache.tar -C "$JAX_COMPILATION_CACHE_DIR"
  fi
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl 2>&1 | tail -2
  else
    say "setup: no .whl/*.whl to install"
  fi
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
      --format=csv | tee -a "$LOG"
  fi
  python3 -c "import jax, flax, optax, grain; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tail -1 | tee -a "$LOG"
  python3 benchmarks/gpu_preflight.py --stages="$STAGES" --data="$DATA" \
    --sim_data="${SIM_DATA:-.gpudata/mp4k_s}" --torch_ref="$(torch_ref)" \
    --out="$OUT_DIR/preflight.json" 2>&1 | tee -a "$LOG"
fi

if has baseline && fits baseline 150; then
  timeout $(( $(left) - 10 )) python3 benchmarks/train_step.py --config="$SUPERVISED" \
    --per_device_batch="$BATCH" --steps="$STEPS" --repeats="$REPEATS" --data="$DATA" \
    --profile_dir=/tmp/profile_baseline --profile_steps=5 \
    > "$OUT_DIR/baseline.out" 2>> "$LOG"
  tail -n 12 "$OUT_DIR/baseline.out" | grep -v '^{' | tee -a "$LOG"
  python3 benchmarks/profile_summary.py /tmp/profile_baseline --steps=5 > "$OUT_DIR/profile.md" 2>&1
  trace=$(find /tmp/profile_baseline -name perfetto_trace.json.gz | head -n 1)
  [[ -n $trace ]] && (( $(stat -c %s "$trace") < 15000000 )) && cp "$trace" "$OUT_DIR/trace.json.gz"
fi

if has sweep && fits sweep 200; then
  custom=()
  IFS='|' read -ra specs <<< "${SWEEP_CUSTOM:-}"
  for s in "${specs[@]}"; do [[ -n $s ]] && custom+=("--custom=$s"); done
  runs=()
  [[ -n ${SWEEP_RUNS:-} ]] && runs=("--runs=$SWEEP_RUNS")
  timeout $(( $(left) - 10 )) python3 benchmarks/sweep.py "${runs[@]}" \
    --configs="${SWEEP_CONFIGS:-$SUPERVISED}" \
    --variants="${SWEEP_VARIANTS:-baseline,dropout_bits32,dropout_bits8,no_dropout}" "${custom[@]}" \
    --per_device_batch="${SWEEP_BATCH:-$BATCH}" --steps="$STEPS" --repeats="$REPEATS" \
    --warmup="$WARMUP" --precompile_jobs="$PRECOMPILE_JOBS" --timeout="${SWEEP_TIMEOUT:-300}" \
    ${SWEEP_DATA:+--data="$SWEEP_DATA"} --out="$OUT_DIR/sweep.jsonl" \
    2>> "$LOG" | tee -a "$LOG"
fi

if has kernelcheck && fits kernelcheck 120; then
  # The kernels compiled for the device against the einsum/XLA path (interpret mode off the GPU).
  platform=cuda; [[ $DRY_RUN == 1 ]] && platform=cpu
  JAX_PLATFORMS=$platform timeout $(( $(left) - 10 )) python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_fused_kernels.py > "$OUT_DIR/kernelcheck.out" 2>&1
  say "kernelcheck: $(tail -n 1 "$OUT_DIR/kernelcheck.out")"
fi

if has kernels && fits kernels 240; then
  # Same binary, one switch at a time and all together, rounds in alternating order.
  timeout $(( $(left) - 10 )) python3 benchmarks/sweep.py \
    --configs="${KERNEL_CONFIGS:-$SUPERVISED}" \
    --variants="${KERNEL_VARIANTS:-baseline,fused_attention,fused_norm,fused_bias_grad,fused_all}" \
    --rounds="${KERNEL_ROUNDS:-2}" --per_device_batch="$BATCH" --steps="$STEPS" \
    --repeats="$REPEATS" --warmup="$WARMUP" --precompile_jobs="$PRECOMPILE_JOBS" \
    --timeout="${SWEEP_TIMEOUT:-300}" --out="$OUT_DIR/kernels.jsonl" 2>> "$LOG" | tee -a "$LOG"
  if [[ ${KERNEL_PROFILE:-0} == 1 ]] && fits "kernels profile" 90; then
    timeout $(( $(left) - 10 )) python3 benchmarks/train_step.py --config="$SUPERVISED" \
      --per_device_batch="$BATCH" --steps="$STEPS" --repeats=1 --warmup=1 \
      --config.model.fused_attention=True --config.model.fused_norm=True \
      --config.model.fused_bias_grad=True --profile_dir=/tmp/profile_fused --profile_steps=5 \
      > "$OUT_DIR/fused.out" 2>> "$LOG"
    python3 benchmarks/profile_summary.py /tmp/profile_fused --steps=5 > "$OUT_DIR/profile_fused.md" 2>&1
  fi
fi

if has hlo && fits hlo 60; then
  # The optimised program of the default supervised step (a cache hit after the sweep), to map
  # the kernels of profile.md to the ops they run.
  timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --config="$SUPERVISED" \
    --per_device_batch="$BATCH" --compile_only --dump_hlo="$OUT_DIR/hlo.txt.gz" > /dev/null 2>> "$LOG"
fi

if has final && fits final 150; then
  for b in $BATCH ${FINAL_BATCH2:-}; do
    for c in "$SUPERVISED" "$MXM"; do
      fits "final $c $b" 60 || continue
      timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --config="$c" \
        --per_device_batch="$b" --steps="$STEPS" --repeats="$REPEATS" --warmup="$WARMUP" --data="$DATA" \
        >> "$OUT_DIR/final.out" 2>> "$LOG"
      tail -n 1 "$OUT_DIR/final.out" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(r['config'] or r['model'], r['objective'], r['per_device_batch'], 'synthetic', round(r['synthetic']['samples_per_s']), 'data', round(r['data']['samples_per_s']), 'mfu', round(r['synthetic']['mfu'],3), 'compile', round(r['compile_seconds'],1), 'peak GB', (r['peak_device_memory_bytes'] or 0)/1e9)" 2>&1 | tee -a "$LOG"
    done
  done
fi

if has simulated; then
  for source in stored simulated; do
    fits "simulated: $source" 120 || continue
    timeout $(( $(left) - 5 )) python3 benchmarks/train_step.py --config="configs/measured.py$SIZE" \
      --per_device_batch="$BATCH" --steps="$STEPS" --repeats="$REPEATS" --warmup="$WARMUP" \
      --data="${SIM_DATA:-.gpudata/mp4k_s}" --config.data.xrd_source=$source \
      >> "$OUT_DIR/simulated.out" 2>> "$LOG"
    tail -n 1 "$OUT_DIR/simulated.out" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('$source', r['per_device_batch'], 'device batches', round(r['synthetic']['samples_per_s']), 'loader-fed', round(r['data']['samples_per_s']), 'compile', round(r['compile_seconds'],1))" 2>&1 | tee -a "$LOG"
  done
fi

if has torch; then
  ref=$(torch_ref)
  if [[ -z $ref ]]; then
    say "torch: no torch_ref.py found"
  elif ! python3 -c "import torch" 2> /dev/null; then
    say "torch: PyTorch is not installed here, skipped"
  else
    for mode in "" "--compile"; do
      fits "torch $mode" 100 || continue
      timeout $(( $(left) - 5 )) python3 "$ref" $mode --steps "$STEPS" --batch "$BATCH" \
        2>> "$LOG" | tail -n 1 | tee -a "$OUT_DIR/torch.jsonl" | tee -a "$LOG"
    done
  fi
fi
if has keepcache; then
  # The compilation cache, for a later call to carry as .gpudata/jax_cache.tar.
  tar -cf /tmp/jax_cache.tar -C "$JAX_COMPILATION_CACHE_DIR" . 2>/dev/null
  size=$(stat -c %s /tmp/jax_cache.tar 2>/dev/null || echo 0)
  say "compilation cache: $size bytes"
  (( size > 0 && size < 15000000 )) && cp /tmp/jax_cache.tar "$OUT_DIR/jax_cache.tar"
fi
say "done"
