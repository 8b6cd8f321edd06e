#!/usr/bin/env bash
# Simulated-only against measured-like (augmented) training, scored on measured scans.
#
#   bash experiments/measured.sh train     DATA OUT   # five runs, ~45 min on 2 CPU cores
#   bash experiments/measured.sh evaluate  MEASURED_INDEX OUT
#
# DATA: a prepared mp_36k (python -m xxact_jax.prepare --input=mp_36k.csv.xz --output=DATA).
# Every run: the "small" model size, crystal system only, the same budget (STEPS of BATCH, peak
# learning rate 1e-3) and seed; the bimodal and XRD-only runs differ only in augment.enabled
# (xxact_augmented_half: half the patterns augmented instead of 80 %; xxact_augmented_texture:
# relative intensities perturbed with a log-scale σ of up to 0.7 instead of 0.3; RUNS="..."
# picks runs).
# `evaluate` scores every run on the measured index with each preprocessing option and writes
# OUT/summary.jsonl (one line per run and option) and OUT/summary.md.
set -euo pipefail
stage=${1:?train|evaluate}
STEPS=${STEPS:-2000}
BATCH=${BATCH:-128}
RUNS=${RUNS:-"xxact_plain xxact_augmented xrd_plain xrd_augmented crabnet"}

config_of() {
  case $1 in
    xxact_plain) echo "configs/supervised.py" ;;
    xxact_augmented) echo "configs/measured.py" ;;
    xxact_augmented_half) echo "configs/measured.py --config.augment.apply_prob=0.5" ;;
    xxact_augmented_texture) echo "configs/measured.py --config.augment.intensity_log_sigma=0.7" ;;
    xrd_plain) echo "configs/xrd_transformer.py" ;;
    xrd_augmented) echo "configs/xrd_transformer.py --config.augment.enabled=True" ;;
    crabnet) echo "configs/crabnet.py" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

if [[ $stage == train ]]; then
  data=${2:?DATA}; out=${3:?OUT}
  for run in $RUNS; do
    read -r config extra <<<"$(config_of "$run")"
    [[ -d $out/$run/checkpoints ]] && { echo "== $run: already trained"; continue; }
    echo "== $run"
    python -m xxact_jax.main --config="$config:size=small,targets=crystal_system" $extra \
      --workdir="$out/$run" --config.data.path="$data" --config.seed=0 \
      --config.num_train_steps="$STEPS" --config.global_batch_size="$BATCH" \
      --config.optimizer.peak_lr=1e-3 --config.eval_every_steps=500 \
      --config.checkpoint_every_steps=500 --config.log_every_steps=100 \
      --config.tensorboard=False
  done
elif [[ $stage == evaluate ]]; then
  index=${2:?MEASURED_INDEX}; out=${3:?OUT}
  : > "$out/summary.jsonl"
  for run in $RUNS; do
    for pre in "none" "snip" "snip,strip_ka2"; do
      background=${pre%%,*}
      strip=$([[ $pre == *strip_ka2* ]] && echo --strip_ka2 || echo --no-strip_ka2)
      dest="$out/eval/$run/${pre/,/_}"
      python -m xxact_jax.evaluate --workdir="$out/$run" --measured="$index" --output="$dest" \
        --background="$background" "$strip" | tail -1 \
        | python -c "import json,sys; m=json.load(sys.stdin); m['run']='$run'; m['preprocessing']='$pre'; print(json.dumps(m))" \
        >> "$out/summary.jsonl"
    done
  done
  python experiments/summarize_measured.py "$out"
else
  echo "unknown stage $stage" >&2; exit 2
fi
