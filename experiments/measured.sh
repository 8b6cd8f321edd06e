#!/usr/bin/env bash
# Simulated-only against measured-like (augmented) training, scored on measured scans.
#
#   bash experiments/measured.sh train     DATA OUT   # five runs, ~40 min on 2 CPU cores
#   bash experiments/measured.sh evaluate  MEASURED_INDEX OUT
#   bash experiments/measured.sh synthetic DATA OUT   # COUNT random crystals (default 30000) with
#                                                     # DATA's priors, prepared into OUT/synthetic
#
# DATA: a prepared mp_36k (python -m xxact_jax.prepare --input=mp_36k.csv.xz --output=DATA).
# Every run: the "small" model size, crystal system only, the same budget (STEPS of BATCH, peak
# learning rate 1e-3) and seed; the bimodal and XRD-only runs differ only in augment.enabled
# (xxact_augmented: 80 % of the patterns augmented, as every run of configs/measured.py here that
# does not set augment.apply_prob; xxact_augmented_p20: 20 %, configs/measured.py's default;
# xxact_augmented_half: 50 %; xxact_augmented_pNN: NN %; xxact_augmented_texture:
# relative intensities perturbed with a log-scale σ of up to 0.7 instead of 0.3; *_sqrt: the
# model reads the square root of the intensities, model.xrd_intensity=sqrt; *_conv: the XRD
# encoder embeds the pattern with convolutions, model.xrd_stem=conv; *_synthetic: the random
# crystals of OUT/synthetic (the `synthetic` stage) join the training rows, data.extra_train;
# synthetic_pretraining: the augmented model trained on those crystals alone, and
# xxact_augmented_synthetic_finetuned: then trained on DATA from its parameters (twice the steps
# in all); *_flagged: the XRD encoder is told which patterns are augmented (measured-like) and
# which simulated, model.xrd_measurement_embedding; *_peaks: the XRD encoder reads the list of
# peaks found in the pattern, model.xrd_stem=peaks (80 % augmented unless _pNN says otherwise);
# mxm_contrastive_augmented: configs/mxm_contrastive.py on patterns 80 % augmented, and
# xxact_mxm_contrastive_finetuned: configs/measured.py's training from its weights (twice the steps);
# RUNS="..." picks runs).
# `evaluate` scores every run on the measured index with each preprocessing option (PRE="..."
# picks some) and writes OUT/summary.jsonl (one line per run and option; the lines of runs not
# scored now stay) and OUT/summary.md.
set -euo pipefail
stage=${1:?train|evaluate}
RUNS=${RUNS:-"xxact_plain xxact_augmented xrd_plain xrd_augmented crabnet"}

config_of() {   # config | config argument | extra flags of a run
  case $1 in
    xxact_plain) echo "supervised|targets=crystal_system|" ;;
    xxact_augmented) echo "measured|targets=crystal_system|" ;;
    xxact_augmented_half) echo "measured|targets=crystal_system|--config.augment.apply_prob=0.5" ;;
    xxact_augmented_p[0-9][0-9])   # e.g. xxact_augmented_p20: 20 % of the patterns augmented
      echo "measured|targets=crystal_system|--config.augment.apply_prob=0.${1#xxact_augmented_p}" ;;
    xxact_augmented_flagged)
      echo "measured|targets=crystal_system|--config.model.xrd_measurement_embedding=True" ;;
    xxact_augmented_half_flagged) echo "measured|targets=crystal_system|\
--config.model.xrd_measurement_embedding=True --config.augment.apply_prob=0.5" ;;
    xrd_augmented_flagged) echo "xrd_transformer|targets=crystal_system|--config.augment.enabled=True \
--config.model.xrd_measurement_embedding=True" ;;
    xxact_augmented_texture)
      echo "measured|targets=crystal_system|--config.augment.intensity_log_sigma=0.7" ;;
    xxact_plain_sqrt) echo "supervised|targets=crystal_system|--config.model.xrd_intensity=sqrt" ;;
    xxact_augmented_sqrt)
      echo "measured|targets=crystal_system|--config.model.xrd_intensity=sqrt" ;;
    xxact_plain_conv) echo "supervised|targets=crystal_system|--config.model.xrd_stem=conv" ;;
    xxact_augmented_conv) echo "measured|targets=crystal_system|--config.model.xrd_stem=conv" ;;
    xrd_plain) echo "xrd_transformer|targets=crystal_system|" ;;
    xrd_augmented)
      echo "xrd_transformer|targets=crystal_system|--config.augment.enabled=True" ;;
    xrd_plain_conv) echo "xrd_transformer|targets=crystal_system|--config.model.xrd_stem=conv" ;;
    xrd_augmented_conv) echo "xrd_transformer|targets=crystal_system|--config.model.xrd_stem=conv \
--config.augment.enabled=True" ;;
    xxact_augmented_synthetic)
      echo "measured|targets=crystal_system|--config.data.extra_train=$out/synthetic" ;;
    xrd_augmented_synthetic) echo "xrd_transformer|targets=crystal_system|--config.augment.enabled=True \
--config.data.extra_train=$out/synthetic" ;;
    xxact_plain_synthetic)
      echo "supervised|targets=crystal_system|--config.data.extra_train=$out/synthetic" ;;
    synthetic_pretraining) echo "measured|targets=crystal_system|" ;;   # on OUT/synthetic alone
    xxact_augmented_synthetic_finetuned)
      echo "finetune|targets=crystal_system,init=$out/synthetic_pretraining|\
--config.augment.enabled=True" ;;
    # Patterns simulated again in the train step with per-reflection sample effects: DATA must be
    # prepared with --store_structures.
    xxact_augmented_simulated)
      echo "measured|targets=crystal_system|--config.data.xrd_source=simulated" ;;
    xrd_augmented_simulated) echo "xrd_transformer|targets=crystal_system|--config.augment.enabled=True \
--config.data.xrd_source=simulated" ;;
    # The XRD encoder reads a list of peaks (model.xrd_stem=peaks, models/peak_tokens.py) found
    # in the (augmented) pattern, instead of 17 patches of the profile.
    xxact_peaks) echo "measured|targets=crystal_system|--config.model.xrd_stem=peaks" ;;
    xxact_peaks_p[0-9][0-9]) echo "measured|targets=crystal_system|--config.model.xrd_stem=peaks \
--config.augment.apply_prob=0.${1#xxact_peaks_p}" ;;
    xrd_peaks) echo "xrd_transformer|targets=crystal_system|--config.model.xrd_stem=peaks \
--config.augment.enabled=True --config.augment.apply_prob=0.8" ;;
    # The paper's pretraining as domain adaptation: masked XRD modelling and contrastive alignment
    # on augmented (measured-like) patterns, then configs/measured.py's training from its weights.
    mxm_contrastive_augmented) echo "mxm_contrastive||--config.augment.enabled=True \
--config.augment.apply_prob=0.8" ;;
    xxact_mxm_contrastive_finetuned) echo "finetune|targets=crystal_system,init=$out/mxm_contrastive_augmented|\
--config.augment.enabled=True --config.augment.apply_prob=0.2" ;;
    crabnet) echo "crabnet|targets=crystal_system|" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

if [[ $stage == train ]]; then
  data=$(realpath -m "${2:?DATA}"); out=$(realpath -m "${3:?OUT}")
  cd "$(dirname "$0")/.."
  source experiments/train_runs.sh
  for run in $RUNS; do
    # synthetic_pretraining trains on the random crystals alone (the `synthetic` stage).
    run_data=$data; [[ $run == synthetic_pretraining ]] && run_data=$out/synthetic
    line=$(config_of "$run")
    # The runs of configs/measured.py augment 80 % of the patterns unless they say otherwise.
    [[ ${line%%|*} == measured && $line != *apply_prob* ]] \
      && line="$line --config.augment.apply_prob=0.8"
    STEPS=${STEPS:-2000} train_runs "$run_data" "$out" small "$run|$line"
  done
elif [[ $stage == synthetic ]]; then
  data=$(realpath -m "${2:?DATA}"); out=$(realpath -m "${3:?OUT}")
  cd "$(dirname "$0")/.."
  mkdir -p "$out"
  if [[ ! -f $out/synthetic.csv.gz ]]; then
    python -m xxact_jax.synthesize --count="${COUNT:-30000}" --like="$data" \
      --output="$out/synthetic.partial.csv.gz"
    mv "$out/synthetic.partial.csv.gz" "$out/synthetic.csv.gz"
  fi
  python -m xxact_jax.prepare --input="$out/synthetic.csv.gz" --output="$out/synthetic"
elif [[ $stage == evaluate ]]; then
  index=$(realpath -m "${2:?MEASURED_INDEX}"); out=$(realpath -m "${3:?OUT}")
  cd "$(dirname "$0")/.."
  # "reference": the scans whose composition the run's training split holds are answered by the
  # best-matching row (inference/reference.py); "indexing": the others' answers are restricted
  # to the systems of the lattice that indexes them (inference/indexing.py); the rows without
  # either measure the model alone.
  PRE=${PRE:-none snip snip,strip_ka2 none,reference none,reference,indexing}
  # The lines of what is scored now are replaced; the others stay.
  touch "$out/summary.jsonl"
  RUNS="$RUNS" PRE="$PRE" python -c "
import json, os, sys
path = sys.argv[1]
scored = {(r, p) for r in os.environ['RUNS'].split() for p in os.environ['PRE'].split()}
kept = [l for l in open(path)
        if l.strip() and (json.loads(l)['run'], json.loads(l)['preprocessing']) not in scored]
open(path, 'w').writelines(kept)" "$out/summary.jsonl"
  for run in $RUNS; do
    for pre in $PRE; do
      background=${pre%%,*}
      strip=$([[ $pre == *strip_ka2* ]] && echo --strip_ka2 || echo --nostrip_ka2)
      reference=$([[ $pre == *reference* ]] && echo auto || echo none)
      indexing=$([[ $pre == *indexing* ]] && echo --indexing || echo --noindexing)
      dest="$out/eval/$run/${pre//,/_}"
      python -m xxact_jax.evaluate --workdir="$out/$run" --measured="$index" --output="$dest" \
        --background="$background" "$strip" --reference="$reference" "$indexing" | tail -1 \
        | python -c "import json,sys; m=json.load(sys.stdin); m['run']='$run'; m['preprocessing']='$pre'; print(json.dumps(m))" \
        >> "$out/summary.jsonl"
    done
  done
  python experiments/summarize_measured.py "$out"
else
  echo "unknown stage $stage" >&2; exit 2
fi
