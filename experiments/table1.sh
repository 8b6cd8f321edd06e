#!/usr/bin/env bash
# The paper's Table 1 at one size: XxaCT-NN against CrabNet (composition), the XRD transformer and
# the PXRDPIAYN FCN (XRD), and FCN+MLP (both), single-target and multi-target.
#
#   bash experiments/table1.sh DATA OUT [SIZE]      # SIZE: small (default) | paper
#
# Every model with its own published loss (CrabNet: RobustL1; the others: MSE), the budget of
# experiments/train_runs.sh (STEPS, BATCH, LR, SEED). MODELS (configs, default all five) and
# TASKS (default "multi formation_energy crystal_system") pick runs. Results: OUT/summary.md.
set -euo pipefail
data=$(realpath -m "${1:?DATA}"); out=$(realpath -m "${2:?OUT}"); size=${3:-small}
cd "$(dirname "$0")/.."
source experiments/train_runs.sh
runs=()
for config in ${MODELS:-supervised crabnet xrd_transformer pxrd_fcn pxrd_fcn_mlp}; do
  model=${config/supervised/xxact}
  for task in ${TASKS:-multi formation_energy crystal_system}; do
    case $task in
      multi) runs+=("${model}_multi|$config||") ;;
      formation_energy) runs+=("${model}_formation_energy|$config|targets=formation_energy_per_atom|") ;;
      crystal_system) runs+=("${model}_crystal_system|$config|targets=crystal_system|") ;;
      *) echo "unknown task $task" >&2; exit 2 ;;
    esac
  done
done
train_runs "$data" "$out" "$size" "${runs[@]}"
python experiments/summarize_runs.py "$out"
