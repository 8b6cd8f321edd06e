"""Grain pipeline over a Dataset: shard -> per-epoch shuffle -> index batches -> read_batch."""

from absl import flags
import grain
import numpy as np

from xxact_jax.data import dataset as dataset_lib


def make_loader(ds: dataset_lib.Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                num_epochs: int | None = None, shard_index: int = 0, shard_count: int = 1,
                worker_count: int = 0, drop_remainder: bool = True, read_threads: int = 2,
                prefetch_batches: int = 4) -> grain.IterDataset:
  """A Grain IterDataset of batch dicts; `iter()` gives a checkpointable iterator.

  Each process takes rows shard_index::shard_count, reshuffled every epoch from
  `seed`. Batching happens on indices, so each batch is one `ds.read_batch` call
  (one TensorStore read per array). worker_count > 0 runs the reads in that many
  worker processes; their iterator state round-trips through get_state/set_state.

  Args:
    ds: an opened Dataset.
    batch_size: rows per batch (per process).
    seed: shuffle seed.
    shuffle: reshuffle every epoch; False keeps row order.
    num_epochs: None repeats forever.
    shard_index, shard_count: this process's slice of the rows.
    worker_count: reader processes (0 = in this process).
    drop_remainder: drop the last short batch of the run.
    read_threads: threads issuing read_batch calls per process.
    prefetch_batches: batches read ahead per process.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, shard_count={shard_count}).")
  indices = grain.MapDataset.range(len(ds))[shard_index::shard_count]
  if len(indices) == 0:
    raise ValueError(f"Shard {shard_index}/{shard_count} of {ds!r} has no rows.")
  if shuffle:
    indices = indices.shuffle(seed=seed)
  if num_epochs != 1:
    indices = indices.repeat(num_epochs)
  batches = indices.batch(batch_size, drop_remainder=drop_remainder, batch_fn=np.asarray)
  batches = batches.map(ds.read_batch)
  pipeline = batches.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                       prefetch_buffer_size=prefetch_batches))
  if worker_count > 0:
    # Grain's worker processes read absl flags; outside an absl app they are unparsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    pipeline = pipeline.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return pipeline
