"""Shared pytest fixtures: the embedded default dataset and the small data fixtures."""

import os

import pytest

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
  from xxact_jax.data import prepare  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("small_dataset"))
  prepare.prepare_dataset([os.path.join(FIXTURES_DIR, "mp_small.csv.gz")], path, workers=0,
                          block_rows=3, test_fraction=0.25, seed=1)
  return path
