#!/usr/bin/env bash
# Why the bimodal model loses to CrabNet on formation energy: ablations at one size and budget.
#
#   bash experiments/formation_energy.sh DATA OUT [SIZE]      # SIZE: small (default) | paper
#
# DATA: a prepared mp_36k (python -m xxact_jax.prepare --input=mp_36k.csv.xz --output=DATA).
# Every run: the paper's multi-target setting (formation energy + crystal system) unless the run
# says otherwise, STEPS of BATCH at peak learning rate LR, seed 0, the same data. The runs differ
# in one thing each from `xxact_mse` (the paper's XxaCT-NN) or `crabnet_robust_l1` (CrabNet as
# published). Results: OUT/summary.md (python experiments/summarize_runs.py OUT).
set -euo pipefail
data=${1:?DATA}; out=${2:?OUT}; size=${3:-small}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-128}
LR=${LR:-1e-3}
# name | config file | config argument (after size=) | extra flags
RUNS=${RUNS:-"
xxact_mse|supervised||
crabnet_robust_l1|crabnet||
crabnet_mse|crabnet|loss=mse|
xxact_robust_l1|supervised|loss=robust_l1|
xxact_mse_all_targets_per_example|supervised||--config.task_sampling=all
xxact_mse_composition_readout|supervised||--config.model.readout=fused_and_composition_cls
xxact_mse_mlp_head|supervised||--config.model.head_hidden=(256,128)
xxact_mse_formation_energy_only|supervised|targets=formation_energy_per_atom|
xrd_transformer_mse|xrd_transformer||
"}
while IFS='|' read -r name config arg extra; do
  [[ -z $name ]] && continue
  [[ -f $out/$name/done ]] && { echo "== $name: done"; continue; }
  echo "== $name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  python -m xxact_jax.main --config="configs/$config.py:size=$size${arg:+,$arg}" $extra \
    --workdir="$out/$name" --config.data.path="$data" --config.seed=0 \
    --config.num_train_steps="$STEPS" --config.global_batch_size="$BATCH" \
    --config.optimizer.peak_lr="$LR" --config.eval_every_steps=500 \
    --config.checkpoint_every_steps=500 --config.log_every_steps=100 --config.tensorboard=False
  echo "$(( $(date +%s) - start ))" > "$out/$name/done"
done <<<"$RUNS"
python experiments/summarize_runs.py "$out"
