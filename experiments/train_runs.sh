# Trains a list of runs into OUT, one workdir each, at one budget; sourced by the experiment scripts.
#
#   train_runs DATA OUT SIZE "name|config|config argument|extra flags" ...
#
# Every run: --config=configs/<config>.py:size=SIZE[,<argument>] <extra flags>, STEPS of BATCH at
# peak learning rate LR with seed SEED (environment; defaults 3000, 128, 1e-3, 0), DATA's train
# split, an evaluation every 500 steps. A finished run leaves OUT/<name>/done (its wall time in seconds) and
# is skipped when the script is run again; an unfinished one resumes from its checkpoint.
train_runs() {
  local data=$1 out=$2 size=$3 name config arg extra start
  shift 3
  for line in "$@"; do
    IFS='|' read -r name config arg extra <<<"$line"
    [[ -z $name ]] && continue
    [[ -f $out/$name/done ]] && { echo "== $name: done"; continue; }
    echo "== $name"
    start=$(date +%s)
    # shellcheck disable=SC2086
    python -m xxact_jax.main --config="configs/$config.py:size=$size${arg:+,$arg}" $extra \
      --workdir="$out/$name" --config.data.path="$data" --config.seed="${SEED:-0}" \
      --config.num_train_steps="${STEPS:-3000}" --config.global_batch_size="${BATCH:-128}" \
      --config.optimizer.peak_lr="${LR:-1e-3}" --config.eval_every_steps=500 \
      --config.checkpoint_every_steps=500 --config.log_every_steps=100 --config.tensorboard=False
    echo "$(( $(date +%s) - start ))" > "$out/$name/done"
  done
}
