#!/usr/bin/env bash
# Why the bimodal model loses to CrabNet on formation energy: ablations at one size and budget.
#
#   bash experiments/formation_energy.sh DATA OUT [SIZE]      # SIZE: small (default) | paper
#
# DATA: a prepared mp_36k (python -m xxact_jax.prepare --input=mp_36k.csv.xz --output=DATA).
# Every run: the paper's multi-target setting (formation energy + crystal system) unless the run
# says otherwise, the budget of experiments/train_runs.sh (STEPS, BATCH, LR), seed 0. Each run
# differs in one thing from `xxact_mse` (the paper's XxaCT-NN) or `crabnet_robust_l1` (CrabNet as
# published). Results: OUT/summary.md (experiments/summarize_runs.py).
set -euo pipefail
data=$(realpath -m "${1:?DATA}"); out=$(realpath -m "${2:?OUT}"); size=${3:-small}
cd "$(dirname "$0")/.."
source experiments/train_runs.sh
# name | config | config argument | extra flags
train_runs "$data" "$out" "$size" \
  "xxact_mse|supervised||" \
  "crabnet_robust_l1|crabnet||" \
  "crabnet_mse|crabnet|loss=mse|" \
  "xxact_robust_l1|supervised|loss=robust_l1|" \
  "xxact_mse_all_targets_per_example|supervised||--config.task_sampling=all" \
  "xxact_mse_composition_readout|supervised||--config.model.readout=fused_and_composition_cls" \
  "xxact_mse_mlp_head|supervised||--config.model.head_hidden=(256,128)" \
  "xxact_mse_formation_energy_only|supervised|targets=formation_energy_per_atom|" \
  "xxact_robust_l1_formation_energy_only|supervised|targets=formation_energy_per_atom,loss=robust_l1|" \
  "xrd_transformer_mse|xrd_transformer||"
python experiments/summarize_runs.py "$out"
