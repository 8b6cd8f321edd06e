"""One process of a multi-process CPU training run (tests/test_multiprocess.py launches it).

  python tests/helpers/multiprocess_train.py --workdir=DIR --local_devices=2 \
      --num_processes=2 --process_id=I --coordinator=localhost:PORT

trains configs/supervised.py:runlocal for a few steps on the embedded dataset with the project's
own trainer, every process writing into the same workdir. With --num_processes=1 it runs alone,
without jax.distributed: the single-process reference.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "supervised.py")

# Small enough for two shared CPU cores; the global batch divides over 4 devices and 2 processes.
NUM_STEPS = 6
GLOBAL_BATCH = 16
EVAL_BATCH = 64
SAVE_EVERY = 1


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--workdir", required=True)
  p.add_argument("--local_devices", type=int, required=True, help="fake CPU devices per process")
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--coordinator", default="", help="host:port of process 0")
  return p.parse_args(argv)


def main(argv):
  args = parse_args(argv)
  # Read when the XLA backend starts: tiny CPU programs compile faster than they would run faster.
  if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", args.local_devices)
  jax.config.update("jax_compilation_cache_dir",
                    os.environ.get("XXACT_JAX_TEST_JIT_CACHE", "/tmp/xxact_jax_test_jit_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if args.num_processes > 1:
    # Cross-process all-reduces on CPU go over TCP.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=120)
  # The test shows the tail of stderr when a process fails: the trainer's lines, not Orbax's.
  logging.set_verbosity(logging.INFO)
  logging.get_absl_logger().addFilter(
      lambda r: r.levelno >= std_logging.WARNING or "/orbax/" not in r.pathname)

  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import train  # pylint: disable=g-import-not-at-top

  config = defaults.load_config_file(CONFIG, "runlocal")
  config.num_train_steps = NUM_STEPS
  config.global_batch_size = GLOBAL_BATCH
  config.eval_batch_size = EVAL_BATCH
  config.log_every_steps = 1            # every step's loss in metrics.jsonl
  # Evaluating at every save makes the latest and the best checkpoint save the same step at once,
  # in every process: their cross-process barriers must not collide.
  config.eval_every_steps = SAVE_EVERY
  config.checkpoint_every_steps = SAVE_EVERY
  config.tensorboard = False
  assert jax.device_count() == args.num_processes * args.local_devices, jax.devices()
  train.train_and_evaluate(config, args.workdir)
  if args.num_processes > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
