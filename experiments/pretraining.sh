#!/usr/bin/env bash
# The paper's Table 3 / Fig. 2 at one size: pretraining (MXM + contrastive), then fine-tuning on
# the multi-target task, against the same model trained from scratch; and Fig. 3's data fractions.
#
#   bash experiments/pretraining.sh DATA OUT [SIZE]     # SIZE: small (default) | paper
#
# Runs (the budget of experiments/train_runs.sh: STEPS of BATCH at peak LR, seed 0; FRACTIONS
# of the training split, default "0.1"):
#   mxm_contrastive            pretraining on DATA's train split (no labels used)
#   xxact_multi                formation energy + crystal system from scratch (as table1.sh)
#   xxact_multi_finetuned      the same from mxm_contrastive's parameters
#   mxm, contrastive           each pretraining loss alone (PRETRAINING="mxm_contrastive mxm
#   xxact_multi_finetuned_<P>  contrastive"; default mxm_contrastive only), and the fine-tuning
#                              from each
#   xxact_multi[_finetuned]_fraction<F>   both on a random fraction F of the training rows
# Then OUT/compare/ (python -m xxact_jax.report.compare: convergence curves and the speed-up to
# reach the scratch run's error at a quarter of its training) and OUT/mxm_contrastive/report
# (embedding PCA of the pretrained model).
set -euo pipefail
data=$(realpath -m "${1:?DATA}"); out=$(realpath -m "${2:?OUT}"); size=${3:-small}
cd "$(dirname "$0")/.."
source experiments/train_runs.sh
train_runs "$data" "$out" "$size" \
  "mxm_contrastive|mxm_contrastive||" \
  "xxact_multi|supervised||" \
  "xxact_multi_finetuned|finetune|init=$out/mxm_contrastive|"
for pretraining in ${PRETRAINING:-mxm_contrastive}; do
  [[ $pretraining == mxm_contrastive ]] && continue
  train_runs "$data" "$out" "$size" \
    "$pretraining|$pretraining||" \
    "xxact_multi_finetuned_$pretraining|finetune|init=$out/$pretraining|"
done
for fraction in ${FRACTIONS:-0.1}; do
  train_runs "$data" "$out" "$size" \
    "xxact_multi_fraction$fraction|supervised||--config.data.train_fraction=$fraction" \
    "xxact_multi_finetuned_fraction$fraction|finetune|init=$out/mxm_contrastive|--config.data.train_fraction=$fraction"
done
python -m xxact_jax.report.compare "$out/xxact_multi" "$out/xxact_multi_finetuned" \
  --names=scratch,pretrained --output_dir="$out/compare"
python -m xxact_jax.report --workdir="$out/mxm_contrastive" --data_path="$data" --max_samples=4000
python experiments/summarize_runs.py "$out"
