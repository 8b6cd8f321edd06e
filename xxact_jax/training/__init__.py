"""Training: objectives, optimiser, sharding, checkpoints and the train loop."""


def train_and_evaluate(config, workdir):
  from xxact_jax.training.train import train_and_evaluate as _train  # pylint: disable=g-import-not-at-top
  return _train(config, workdir)
