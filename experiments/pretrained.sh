#!/usr/bin/env bash
# Rebuilds the model shipped with the package (xxact_jax/pretrained/NAME-vVERSION/, docs/MODELS.md)
# from mp_36k: prepares the data if needed, trains one member per seed, exports them with the
# compact reference of the training rows, and scores the result.
#
#   bash experiments/pretrained.sh [OUT]      # OUT: the runs and the prepared data (default
#                                             # /tmp/xxact_pretrained); the model goes to OUTPUT
#
# Environment (defaults in brackets):
#   CONFIG   the training config [configs/measured.py:size=small,targets=all]
#   FLAGS    further --config.* flags of every member []
#   SEEDS    one member per seed [0 1 2]
#   STEPS, BATCH, LR   budget of each member [2000, 128, 1e-3]
#   CSV      mp_36k [../shared/data/mp_36k/mp_36k.csv.xz, beside the repository]
#   DATA     the prepared CSV [OUT/mp36k, prepared here when missing]
#   MEASURED measured scans checked at export and scored at the end
#            [../shared/data/measured_xrd_dev/index.csv, skipped when missing]
#   NAME, VERSION   the model's name and version [xxact-mp36k, 1]
#   OUTPUT   the model folder [xxact_jax/pretrained/NAME-vVERSION]
#   DTYPE    auto (float16 where the ensemble's predictions move by < 1e-3 in probability and
#            < 1 meV, else some collections in float32: "mixed", else float32), float16 or
#            float32 [auto]
#
# Each member's run is seeded (--config.seed=SEED; the data order and dropout follow from it); a
# finished member (OUT/seedN/done, its wall time in seconds) is not trained again. A tiny dry run:
#   CONFIG=configs/measured.py:runlocal,targets=all STEPS=20 SEEDS="0 1" DATA=<prepared> \
#     OUTPUT=/tmp/model bash experiments/pretrained.sh /tmp/dry
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-/tmp/xxact_pretrained}")
CONFIG=${CONFIG:-configs/measured.py:size=small,targets=all}
FLAGS=${FLAGS:-}
SEEDS=${SEEDS:-0 1 2}
STEPS=${STEPS:-2000}; BATCH=${BATCH:-128}; LR=${LR:-1e-3}
CSV=${CSV:-../shared/data/mp_36k/mp_36k.csv.xz}
DATA=$(realpath -m "${DATA:-$out/mp36k}")
MEASURED=${MEASURED:-../shared/data/measured_xrd_dev/index.csv}
NAME=${NAME:-xxact-mp36k}; VERSION=${VERSION:-1}
OUTPUT=${OUTPUT:-xxact_jax/pretrained/$NAME-v$VERSION}
DTYPE=${DTYPE:-auto}
mkdir -p "$out"

if [[ ! -f $DATA/metadata.json ]]; then
  echo "== prepare $CSV -> $DATA"
  python -m xxact_jax.prepare --input="$CSV" --output="$DATA"   # seed 0: mp_36k's 90/10 split
fi

workdirs=()
for seed in $SEEDS; do
  workdir=$out/seed$seed
  workdirs+=("$workdir")
  [[ -f $workdir/done ]] && { echo "== seed $seed: done"; continue; }
  echo "== seed $seed"
  start=$(date +%s)
  # shellcheck disable=SC2086
  python -m xxact_jax.main --config="$CONFIG" $FLAGS --workdir="$workdir" \
    --config.data.path="$DATA" --config.seed="$seed" --config.num_train_steps="$STEPS" \
    --config.global_batch_size="$BATCH" --config.optimizer.peak_lr="$LR" \
    --config.eval_every_steps=500 --config.checkpoint_every_steps=500 \
    --config.log_every_steps=100 --config.tensorboard=False
  echo "$(( $(date +%s) - start ))" > "$workdir/done"
done
# Each member's class probabilities on measured scans calibrated on augmented held-out patterns
# (inference/calibration.py; WORKDIR/calibration.json travels with the member).
for workdir in "${workdirs[@]}"; do
  [[ -f $workdir/calibration.json ]] || python -m xxact_jax.evaluate --workdir="$workdir" \
    --data="$DATA" --calibrate --output="$workdir/calibration_out" | tail -1
done

measured_flag=()
[[ -f $MEASURED ]] && measured_flag=(--measured="$MEASURED")
command="CONFIG='$CONFIG' FLAGS='$FLAGS' SEEDS='$SEEDS' STEPS=$STEPS BATCH=$BATCH LR=$LR"
command+=" NAME=$NAME VERSION=$VERSION DTYPE=$DTYPE bash experiments/pretrained.sh"
python -m xxact_jax.inference.export --workdir="$(IFS=,; echo "${workdirs[*]}")" \
  --data="$DATA" --output="$OUTPUT" --name="$NAME" --version="$VERSION" --dtype="$DTYPE" \
  --training_config="$CONFIG" --training_flags="$FLAGS --config.num_train_steps=$STEPS \
--config.global_batch_size=$BATCH --config.optimizer.peak_lr=$LR" \
  --command="$command" "${measured_flag[@]}" --overwrite

# The model card's figures: mp_36k's test split, and the measured scans (model alone; default).
python experiments/pretrained_metrics.py --model="$OUTPUT" --data="$DATA" \
  "${measured_flag[@]}" --output="$out/metrics"
du -sh "$OUTPUT"
