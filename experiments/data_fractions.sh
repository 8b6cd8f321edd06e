#!/usr/bin/env bash
# The paper's Fig. 3 at one size: error against training-set size for the bimodal model and both
# unimodal ones, with a power-law fit.
#
#   bash experiments/data_fractions.sh DATA OUT [SIZE]     # SIZE: small (default) | paper
#
# Runs, the paper's multi-target setting at the budget of experiments/train_runs.sh (STEPS of
# BATCH, seed 0), each on a seeded random fraction of the training split (FRACTIONS, default
# "0.1 0.3 1"; the evaluation split stays whole): xxact_multi, crabnet_multi and
# xrd_transformer_multi, suffixed _fraction<F> below 1 (the F = 1 runs are table1.sh's).
# Results: OUT/fractions.md, OUT/fractions.json and OUT/fractions.png (experiments/fit_fractions.py).
set -euo pipefail
data=$(realpath -m "${1:?DATA}"); out=$(realpath -m "${2:?OUT}"); size=${3:-small}
cd "$(dirname "$0")/.."
source experiments/train_runs.sh
for fraction in ${FRACTIONS:-0.1 0.3 1}; do
  for model in xxact crabnet xrd_transformer; do
    config=${model/xxact/supervised}
    if [[ $fraction == 1 ]]; then
      train_runs "$data" "$out" "$size" "${model}_multi|$config||"
    else
      train_runs "$data" "$out" "$size" \
        "${model}_multi_fraction$fraction|$config||--config.data.train_fraction=$fraction"
    fi
  done
done
python experiments/fit_fractions.py "$out"
