"""AdamW with the paper's warmup-cosine schedule, and parameter freezing for transfer learning."""

import jax
import optax


def learning_rate_schedule(opt_config, total_steps: int) -> optax.Schedule:
  """Linear warmup init_lr → peak_lr over warmup_fraction of training, cosine decay to end_lr."""
  warmup = max(1, int(round(opt_config.warmup_fraction * total_steps)))
  return optax.warmup_cosine_decay_schedule(
      init_value=opt_config.init_lr, peak_value=opt_config.peak_lr,
      warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
      end_value=opt_config.end_lr)


def trainable_mask(params, trainable: str):
  """Pytree of bools: True for parameters that are updated. "" = all, "heads" = heads only."""
  if not trainable:
    return jax.tree.map(lambda _: True, params)
  names = set(trainable.split("+"))
  unknown = names - set(params)
  if unknown:
    raise ValueError(f"trainable={trainable!r} names {sorted(unknown)}, not among the model's "
                     f"parameter collections {sorted(params)}")
  return {k: jax.tree.map(lambda _, k=k: k in names, v) for k, v in params.items()}


def make_optimizer(opt_config, total_steps: int, trainable: str = ""):
  schedule = learning_rate_schedule(opt_config, total_steps)
  tx = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2,
                   weight_decay=opt_config.weight_decay)
  if opt_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
  if trainable:
    def labels(params):
      return jax.tree.map(lambda m: "train" if m else "freeze", trainable_mask(params, trainable))
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
  return tx, schedule
