"""The trainer's pieces that the step benchmark reuses: the train state and the batch stream.

`benchmarks/train_step.py` builds its step with `create_train_state` and reads data through
`TrainBatches`, so what it times is exactly what `train.train_and_evaluate` runs.
"""

import collections
import dataclasses
from typing import Any, Callable

from clu import parameter_overview
import jax

from xxact_jax import data as data_lib
from xxact_jax.data import dataset as dataset_lib
from xxact_jax.models import build_model
from xxact_jax.training import eval_loop as eval_lib
from xxact_jax.training import optimizer as optimizer_lib
from xxact_jax.training import sharding as sharding_lib
from xxact_jax.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class TrainState:
  """How to make, shard and advance the training state (step, params, opt_state)."""
  model: Any
  tx: Any
  schedule: Callable[[int], Any]
  init_fn: Callable[[jax.Array], dict]
  abstract_state: Any            # shapes and dtypes, from jax.eval_shape (nothing allocated)
  shardings: Any                 # of the state, over the mesh
  num_params: int
  train_step: Any                # jitted, donating, with explicit shardings

  def init(self, rng: jax.Array) -> dict:
    """The initial state, created directly with its shardings."""
    return jax.jit(self.init_fn, out_shardings=self.shardings)(rng)

  def abstract_with_shardings(self):
    """The abstract state carrying its shardings, as a restore target."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        self.abstract_state, self.shardings)


def create_train_state(config, model_config, mesh, max_elements: int, target_stats: dict,
                       total_steps: int, scattering=None) -> TrainState:
  """The model (of `model_config`, training/defaults.py `model_of`), optimiser and jitted train
  step of `config` (shapes via eval_shape first); scattering: the dataset's scattering
  parameters, for data.xrd_source="simulated"."""
  model = build_model(model_config)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps, config.trainable)
  init_fn = step_lib.make_init_fn(model, tx, max_elements)
  abstract_state = jax.eval_shape(init_fn, jax.random.key(config.seed))
  shardings = sharding_lib.state_shardings(mesh, abstract_state, config.sharding.fsdp)
  num_params = int(parameter_overview.count_parameters(abstract_state["params"]))
  # Explicit shardings: state as given, the batch split along `data`, metrics replicated; the
  # incoming state is donated so its buffers are reused in place.
  train_step = jax.jit(
      step_lib.make_train_step(model, tx, schedule, config, target_stats, scattering=scattering,
                               num_shards=mesh.shape[sharding_lib.DATA_AXIS]),
      in_shardings=(shardings, sharding_lib.batch_sharding(mesh)),
      out_shardings=(shardings, sharding_lib.replicated(mesh)), donate_argnums=(0,))
  return TrainState(model, tx, schedule, init_fn, abstract_state, shardings, num_params,
                    train_step)


class TrainBatches:
  """The shuffled, endless train loader of this process, `config.data.prefetch` batches staged
  on device ahead of the step.

  `next()` returns (iterator state before the batch, the global batch on device); the state of
  the batch at the head of the queue is what a checkpoint saves, so a resumed run reads the
  same batches.
  """

  def __init__(self, config, dataset, batch_sharding, data_state=None):
    # The evaluation's inputs and targets, and with data.xrd_source="simulated" the structures.
    self.keys = eval_lib.batch_keys(config.targets) + (
        dataset_lib.STRUCTURE_FIELDS if step_lib.simulates_xrd(config) else ())
    self.batch_sharding = batch_sharding
    loader = data_lib.make_loader(
        dataset, batch_size=config.global_batch_size // jax.process_count(), seed=config.seed,
        shuffle=True, num_epochs=None, shard_index=jax.process_index(),
        shard_count=jax.process_count(), worker_count=config.data.worker_count,
        fields=self.keys)
    self._iter = iter(loader)
    if data_state is not None:
      self._iter.set_state(data_state)
    self._queue = collections.deque(self._stage() for _ in range(max(1, config.data.prefetch)))

  def _stage(self):
    before = self._iter.get_state()
    host = next(self._iter)
    return before, sharding_lib.global_batch({k: host[k] for k in self.keys},
                                             self.batch_sharding)

  def peek(self):
    """(state, batch) at the head of the queue, not consumed."""
    return self._queue[0]

  def take(self):
    """The batch at the head of the queue, removed. Call `refill` after launching the step
    that consumes it, so the next batch is read while the device computes."""
    return self._queue.popleft()[1]

  def refill(self):
    self._queue.append(self._stage())
