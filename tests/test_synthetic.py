"""Random crystals of known symmetry (data/synthetic.py, `python -m xxact_jax.synthesize`) and
training on them beside a prepared dataset (`config.data.extra_train`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from xxact_jax.data import build_dataset
from xxact_jax.data import ConcatDataset
from xxact_jax.data import open_dataset
from xxact_jax.data import synthetic
from xxact_jax.training import defaults
from xxact_jax.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("spacegroup", [1, 2, 14, 62, 139, 148, 166, 194, 221, 225, 227, 230])
def test_orbits_have_pymatgens_multiplicities(spacegroup):
  from pymatgen.core import Lattice, Structure  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(spacegroup)
  system = synthetic.crystal_system_of(spacegroup)
  lattice = Lattice.from_parameters(*synthetic.lattice_shape(system, rng, (0.8, 1.5)))
  for point in (rng.random(3), np.array([0.0, 0.0, 0.0]), np.array([0.5, 0.25, rng.random()])):
    expected = Structure.from_spacegroup(spacegroup, lattice, ["O"], [point], tol=1e-4)
    sites = synthetic.orbit(point, spacegroup)
    assert len(sites) == len(expected), point
    # The same positions, not only as many.
    delta = sites[:, None, :] - expected.frac_coords[None, :, :]
    delta -= np.round(delta)
    assert np.all(np.abs(delta).max(-1).min(1) < 1e-6)


def test_crystals_are_reproducible_separated_and_of_the_drawn_symmetry():
  from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # pylint: disable=g-import-not-at-top
  config = synthetic.SyntheticConfig(max_sites=40)
  priors = synthetic.Priors.uniform(config.max_elements)
  crystals = list(synthetic.generate(40, 7, priors, config))
  again = list(synthetic.generate(3, 7, priors, config))
  other = list(synthetic.generate(3, 8, priors, config))
  for (_, a, _), (_, b, _) in zip(crystals, again):
    assert a == b
  assert crystals[0][1] != other[0][1]
  assert [m for m, _, _ in crystals] == [f"synthetic-7-{i}" for i in range(40)]
  same_system = 0
  for _, structure, drawn in crystals:
    assert 0 < len(structure) <= config.max_sites
    radii = np.array([synthetic._radius(site.specie.Z) for site in structure])
    distances = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    assert (distances / (radii[:, None] + radii[None, :])).min() >= (
        config.min_distance_factor - 1e-6)
    found = SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()
    same_system += synthetic.crystal_system_of(found) == synthetic.crystal_system_of(drawn)
    # The symmetry found is never lower than the one the crystal was built with.
    assert found >= drawn or synthetic.crystal_system_of(found) != "triclinic"
  assert same_system >= 36
  systems = {synthetic.crystal_system_of(d) for _, _, d in crystals}
  assert len(systems) >= 5


def test_priors_follow_a_datasets_train_split(embedded_dataset):
  priors = synthetic.Priors.like(embedded_dataset, 4)
  ds = open_dataset(embedded_dataset, "train")
  batch = ds.read_batch(np.arange(len(ds)), fields=("species", "spacegroup_number"))
  for p in (priors.spacegroup, priors.element, priors.num_elements):
    assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
  most_common = np.bincount(batch["spacegroup_number"]).argmax()
  assert priors.spacegroup.argmax() == most_common
  assert priors.element[[2, 10, 18, 36, 54]].sum() == 0 and priors.element[84:].sum() == 0
  assert priors.element[8] > 0.05   # oxygen, in most Materials Project compounds
  with pytest.raises(ValueError, match="special_probability"):
    synthetic.SyntheticConfig(special_probability=1.5).check()


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
  """24 crystals written by the CLI and prepared like any input."""
  directory = tmp_path_factory.mktemp("synthetic")
  csv = str(directory / "crystals.csv.gz")
  result = subprocess.run(
      [sys.executable, "-m", "xxact_jax.synthesize", "--count=24", "--seed=3", "--max_sites=24",
       f"--output={csv}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["crystals"] == 24
  path = str(directory / "dataset")
  build_dataset.prepare_dataset([csv], path, workers=0, block_rows=8)
  return path


def test_prepared_crystals_carry_symmetry_labels_and_no_energies(synthetic_dataset):
  ds = open_dataset(synthetic_dataset)
  assert len(ds) == 24
  batch = ds.read_batch(np.arange(24))
  assert (batch["crystal_system"] >= 0).all() and (batch["spacegroup_number"] >= 1).all()
  assert np.isnan(batch["formation_energy_per_atom"]).all()
  assert np.isclose(batch["xrd"].astype(np.float32).max(axis=1), 100.0, atol=0.1).all()


def test_extra_train_datasets_join_the_training_rows(synthetic_dataset, embedded_dataset):
  config = defaults.load_config_file(os.path.join(ROOT, "configs", "measured.py"), "runlocal")
  config.data.path = embedded_dataset
  _, base, evaluation = train.open_splits(config)
  config.data.extra_train = f"{synthetic_dataset}, "
  _, mixed, evaluation_mixed = train.open_splits(config)
  assert isinstance(mixed, ConcatDataset) and len(mixed) == len(base) + 24
  assert len(evaluation_mixed) == len(evaluation)
  assert mixed.metadata == base.metadata
  extra = open_dataset(synthetic_dataset)
  # One batch across both parts, in the order asked.
  indices = np.array([len(base) + 5, 0, len(base) + 23, 3, -1])
  got = mixed.read_batch(indices)
  want_base, want_extra = base.read_batch(np.array([0, 3])), extra.read_batch(np.array([5, 23]))
  np.testing.assert_array_equal(got["xrd"][[1, 3]], want_base["xrd"])
  np.testing.assert_array_equal(got["xrd"][[0, 2]], want_extra["xrd"])
  np.testing.assert_array_equal(got["xrd"][4], want_extra["xrd"][1])
  np.testing.assert_array_equal(got["index"], [len(base) + 5, 0, len(base) + 23, 3, len(mixed) - 1])
  assert mixed.material_ids([len(base) + 1, 2, len(base)]) == [
      "synthetic-3-1", base.material_ids([2])[0], "synthetic-3-0"]
  assert len(mixed.read_batch(np.array([], np.int64))["xrd"]) == 0
  with pytest.raises(IndexError):
    mixed.read_batch(np.array([len(mixed)]))
  config.data.extra_train = "/nonexistent/synthetic"
  with pytest.raises(FileNotFoundError, match="extra_train.*nonexistent"):
    train.open_splits(config)
