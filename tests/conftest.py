"""Shared pytest fixtures: the embedded default dataset and the small data fixtures."""

import os

# Tests compile many small XLA programs on CPU; LLVM's optimisation passes dominate their compile
# time and buy nothing for tiny test models. Compiled programs are also cached across test files.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("XXACT_JAX_TEST_JIT_CACHE", "/tmp/xxact_jax_test_jit_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FIXTURES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.fixture(scope="session")
def fixtures_dir() -> str:
  return FIXTURES_DIR


@pytest.fixture(scope="session")
def embedded_dataset() -> str:
  """Path of the featurised embedded sample (built once per cache dir, ~1,000 rows)."""
  from xxact_jax.data import default_dataset_path  # pylint: disable=g-import-not-at-top
  return default_dataset_path()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> str:
  """The 8-row tests/fixtures/mp_small.csv.gz prepared in-process (3-row blocks, 25 % test)."""
  from xxact_jax.data import build_dataset  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("small_dataset"))
  build_dataset.prepare_dataset([os.path.join(FIXTURES_DIR, "mp_small.csv.gz")], path, workers=0,
                                block_rows=3, test_fraction=0.25, seed=1)
  return path


# A 20-step `:runlocal` training run on the embedded data, shared by the inference tests.
RUNLOCAL_TRAIN_STEPS = 20


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
  """A trained `:runlocal` workdir (all four targets)."""
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(FIXTURES_DIR))
  config = defaults.load_config_file(os.path.join(repo, "configs", "supervised.py"),
                                     "runlocal,targets=all")
  config.num_train_steps = RUNLOCAL_TRAIN_STEPS
  config.eval_every_steps = 10
  config.checkpoint_every_steps = 10
  config.log_every_steps = 5
  config.tensorboard = False
  directory = str(tmp_path_factory.mktemp("runlocal"))
  from xxact_jax.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  train_and_evaluate(config, directory)
  return directory


@pytest.fixture(scope="session")
def predictor(workdir):
  import xxact_jax  # pylint: disable=g-import-not-at-top
  return xxact_jax.load(workdir)
