"""Stored structures (prepare --store_structures) and patterns simulated again in the train step."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("pymatgen")

from pymatgen.core import Lattice  # pylint: disable=g-import-not-at-top
from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # pylint: disable=g-import-not-at-top

from xxact_jax import constants  # pylint: disable=g-import-not-at-top
from xxact_jax import physics  # pylint: disable=g-import-not-at-top
from xxact_jax import xrd_engine  # pylint: disable=g-import-not-at-top
from xxact_jax.data import augment  # pylint: disable=g-import-not-at-top
from xxact_jax.data import build_dataset  # pylint: disable=g-import-not-at-top
from xxact_jax.data import composition  # pylint: disable=g-import-not-at-top
from xxact_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
from xxact_jax.data import resimulate  # pylint: disable=g-import-not-at-top
from xxact_jax.data import structures  # pylint: disable=g-import-not-at-top
from xxact_jax.training import train  # pylint: disable=g-import-not-at-top

from test_train import load_config  # pylint: disable=g-import-not-at-top

CU = constants.CU_KA_LINES[0]
A = 5.64
GRID = constants.two_theta_grid()
SITES, REFLECTIONS, ELEMENTS = 16, 512, 4
EPS = 0.03


def _nacl():
  return Structure.from_spacegroup("Fm-3m", Lattice.cubic(A), ["Na", "Cl"],
                                   [[0, 0, 0], [0.5, 0.5, 0.5]])


def _low_symmetry():
  return Structure(Lattice.from_parameters(5.1, 6.3, 7.2, 80, 95, 104),
                   ["Mg", "Si", "O", "O"],
                   [[0.1, 0.2, 0.3], [0.6, 0.15, 0.8], [0.3, 0.7, 0.1], [0.85, 0.45, 0.55]])


def _disordered():
  return Structure(Lattice.tetragonal(4.0, 6.0), [{"Fe": 0.5, "Co": 0.5}, "O", "O"],
                   [[0, 0, 0], [0.5, 0.5, 0.25], [0.5, 0.5, 0.75]])


def _batch(structure_list, rotations=True):
  """The loader's structure fields and composition for pymatgen Structures (no pattern)."""
  rows, species, fractions = [], [], []
  for s in structure_list:
    ops = SpacegroupAnalyzer(s, symprec=0.1).get_symmetry_operations(cartesian=False)
    rot = structures.point_group_rotations(ops) if rotations else np.zeros((0, 3, 3), np.int8)
    row = structures.pack(*xrd_engine.structure_arrays(s), rot, sites=SITES,
                          reflections=REFLECTIONS)
    assert not isinstance(row, str), row
    rows.append(row)
    amounts = {str(e): float(a) for e, a in s.composition.get_el_amt_dict().items()}
    sp, fr = composition.encode_composition(amounts, ELEMENTS)
    species.append(sp)
    fractions.append(fr)
  batch = {name: np.stack([r[name] for r in rows]).astype(dtype)
           for name, dtype in dataset_lib.schema.STRUCTURE_BATCH_DTYPES.items()}
  batch["species"] = np.stack(species).astype(np.int32)
  batch["fractions"] = np.stack(fractions).astype(np.float32)
  batch["xrd"] = np.zeros((len(rows), constants.NUM_XRD_POINTS), np.float16)
  return batch


def _table():
  table, _ = xrd_engine.scattering.scattering_table()
  return jnp.asarray(table, jnp.float32)


def _effects(b, **fields):
  effects = resimulate.Effects.neutral(b)
  return resimulate.Effects(**{**effects.__dict__,
                               **{k: jnp.asarray(v, jnp.float32) for k, v in fields.items()}})


def _simulate(batch, effects=None, max_sigma=0.25):
  return np.asarray(resimulate.simulate(batch, _table(), effects, max_sigma=max_sigma))


def _peak_near(pattern, two_theta, window=0.3):
  """(position, height) of the highest point within ±window° of two_theta, the position refined
  between grid points by a parabola through the three highest."""
  near = np.flatnonzero(np.abs(GRID - two_theta) <= window)
  i = near[np.argmax(pattern[near])]
  left, centre, right = pattern[i - 1], pattern[i], pattern[i + 1]
  offset = 0.5 * (left - right) / (left - 2 * centre + right)
  return GRID[i] + offset * constants.TWO_THETA_STEP, centre


def _bragg(d, wavelength=CU):
  return 2 * math.degrees(math.asin(wavelength / (2 * d)))


def test_neutral_simulation_equals_the_engine_and_pymatgen_physics():
  cells = [_nacl(), _low_symmetry(), _disordered()]
  expected = xrd_engine.simulate(cells)
  got = _simulate(_batch(cells))
  # float32 phases and no 1e-3 relative cut-off: well inside the stored float16 precision.
  np.testing.assert_allclose(got, expected, atol=0.05)


def test_strain_keeps_the_point_group_and_moves_peaks_by_braggs_law():
  batch = _batch([_nacl(), _nacl()])
  rotations = batch["rotations"].copy()
  batch["rotations"][1] = 0            # the second cell: no symmetry, the strain as drawn
  strain = np.zeros((2, 3, 3), np.float32)
  strain[:, 2, 2] = EPS                # uniaxial along c
  g_star = np.asarray(resimulate.reciprocal_metric(jnp.asarray(batch["lattice"]),
                                                   jnp.asarray(rotations), jnp.asarray(strain)))
  # Averaged over m-3m the uniaxial strain becomes isotropic: a cubic metric, a = A(1+ε)^(1/3)
  # to first order.
  np.testing.assert_allclose(g_star[0] - np.diag(np.diag(g_star[0])), 0, atol=1e-7)
  assert np.ptp(np.diag(g_star[0])) < 1e-7
  patterns = _simulate(batch, _effects(2, strain=strain))
  a_iso = 1 / math.sqrt(g_star[0][0, 0])
  assert a_iso == pytest.approx(A * (1 + EPS / 3), rel=1e-3)
  position, _ = _peak_near(patterns[0], _bragg(a_iso / 2))
  assert position == pytest.approx(_bragg(a_iso / 2), abs=0.003)
  # Without the symmetry the (200) family splits: (200)/(020) stay, (002) moves as d = c(1+ε)/2,
  # and holds a third of the family's intensity.
  stay, moved = _bragg(A / 2), _bragg(A * (1 + EPS) / 2)
  p_stay, h_stay = _peak_near(patterns[1], stay, 0.05)
  p_moved, h_moved = _peak_near(patterns[1], moved, 0.05)
  assert p_stay == pytest.approx(stay, abs=0.003) and p_moved == pytest.approx(moved, abs=0.003)
  assert h_stay / h_moved == pytest.approx(2 * _lp(stay) / _lp(moved), rel=0.03)


def _lp(two_theta, anode=CU):
  """Lorentz-polarisation of the reflection seen at two_theta on the Cu grid, measured with the
  `anode` wavelength (sin θ scales with λ at a fixed d)."""
  s = math.sin(math.radians(two_theta / 2)) * anode / CU
  t = math.asin(s)
  return (1 + math.cos(2 * t) ** 2) / (math.sin(t) ** 2 * math.cos(t))


def test_texture_and_debye_waller_agree_with_the_engine():
  cells = [_nacl(), _low_symmetry()]
  effects = xrd_engine.SampleEffects(texture_hkl=np.array([[0, 0, 1], [1, 1, 0]], float),
                                     march_r=np.array([0.7, 1.3]), b_factor=np.array([1.5, 0.8]))
  expected = xrd_engine.simulate(cells, effects=effects)
  got = _simulate(_batch(cells), _effects(2, texture_hkl=effects.texture_hkl,
                                          march_r=effects.march_r, b_factor=effects.b_factor))
  np.testing.assert_allclose(got, expected, atol=0.05)
  assert np.abs(got - xrd_engine.simulate(cells)).max() > 5    # the effects did act


def test_crystallite_size_broadens_by_scherrer_and_keeps_areas():
  batch = _batch([_nacl(), _nacl()])
  size = 40.0
  ideal, broad = _simulate(batch, _effects(2, size_axis_nm=[np.inf, size],
                                           size_lateral_nm=[np.inf, size]))
  def moment(pattern, centre):
    near = np.abs(GRID - centre) <= 1.2
    w = pattern[near]
    return w.sum(), math.sqrt((w * (GRID[near] - centre) ** 2).sum() / w.sum())
  t200, t220 = _bragg(A / 2), _bragg(A / math.sqrt(8))
  (area_i200, width_i), (area_b200, width_b) = moment(ideal, t200), moment(broad, t200)
  theta = math.radians(t200 / 2)
  fwhm = math.degrees(physics.SCHERRER_K * CU / 10 / (size * math.cos(theta)))
  expected = math.sqrt(constants.XRD_SIGMA ** 2 + (fwhm * resimulate.FWHM_TO_SIGMA) ** 2)
  assert width_i == pytest.approx(constants.XRD_SIGMA, rel=0.02)
  assert width_b == pytest.approx(expected, rel=0.03)
  # Areas keep their ratio (the pattern is rescaled to max 100 afterwards).
  ratio_ideal = area_i200 / moment(ideal, t220)[0]
  ratio_broad = area_b200 / moment(broad, t220)[0]
  assert ratio_broad == pytest.approx(ratio_ideal, rel=0.02)


def test_another_anode_reweights_by_its_lorentz_factor_and_marks_its_range():
  batch = _batch([_nacl(), _nacl()])
  mo = resimulate.ANODES["Mo"]
  cu, molybdenum = _simulate(batch, _effects(2, wavelength=[CU, mo]))
  t111, t200 = _bragg(A / math.sqrt(3)), _bragg(A / 2)
  ratio_cu = _peak_near(cu, t111)[1] / _peak_near(cu, t200)[1]
  ratio_mo = _peak_near(molybdenum, t111)[1] / _peak_near(molybdenum, t200)[1]
  lp = (_lp(t111, mo) / _lp(t200, mo)) / (_lp(t111) / _lp(t200))
  assert ratio_mo / ratio_cu == pytest.approx(lp, rel=0.01)
  low = 2 * math.degrees(math.asin(CU / mo * math.sin(math.radians(2.5))))
  assert (molybdenum[GRID < low - 0.02] == constants.UNMEASURED_INTENSITY).all()
  assert (molybdenum[GRID > low + 0.02] >= 0).all()
  assert (cu >= 0).all()


def test_rows_without_a_structure_keep_their_stored_pattern():
  batch = _batch([_nacl(), _low_symmetry()])
  batch["has_structure"][1] = False
  batch["xrd"][1] = np.linspace(0, 100, constants.NUM_XRD_POINTS)
  out = _simulate(batch)
  np.testing.assert_array_equal(out[1], batch["xrd"][1].astype(np.float32))
  assert out[0].max() == pytest.approx(100)


def test_random_effects_are_reproducible_and_in_range():
  config = resimulate.default_config()
  a = resimulate.random_effects(jax.random.key(3), 256, config)
  b = resimulate.random_effects(jax.random.key(3), 256, config)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  march = np.asarray(a.march_r)
  assert ((march >= 0.6 - 1e-6) & (march <= 1.4 + 1e-6)).all() and (march != 1).any()
  allowed = np.array([CU, *resimulate.ANODES.values()])
  drawn = np.unique(np.asarray(a.wavelength))
  assert len(drawn) > 1 and np.abs(drawn[:, None] - allowed).min(axis=1).max() < 1e-5
  np.testing.assert_allclose(a.strain, np.swapaxes(a.strain, 1, 2))
  config.apply_prob = 0.0
  off = resimulate.random_effects(jax.random.key(3), 16, config)
  assert (np.asarray(off.strain) == 0).all() and (np.asarray(off.march_r) == 1).all()


def test_augmentation_keeps_an_incoming_unmeasured_mark():
  xrd = np.zeros((4, constants.NUM_XRD_POINTS), np.float32)
  xrd[:, 1000] = 100
  xrd[:, :300] = constants.UNMEASURED_INTENSITY
  out = np.asarray(augment.augment_xrd(jax.random.key(0), jnp.asarray(xrd),
                                       augment.default_config(enabled=True)))
  assert (out[:, :300] == constants.UNMEASURED_INTENSITY).all()
  assert np.isfinite(out).all() and (out[:, 300:].max(axis=1) > 0).all()


@pytest.fixture(scope="module")
def stored(tmp_path_factory, fixtures_dir):
  path = str(tmp_path_factory.mktemp("stored_structures"))
  build_dataset.prepare_dataset([os.path.join(fixtures_dir, "mp_small.csv.gz")], path, workers=0,
                                block_rows=3, test_fraction=0.25, seed=1, xrd_engine="jax",
                                store_structures=True, structure_sites=SITES,
                                structure_reflections=2048)
  return path


def test_prepare_stores_structures_whose_patterns_match_the_stored_ones(stored):
  ds = dataset_lib.open_dataset(stored)
  assert ds.has_structures and ds.metadata["schema_version"] == 2
  meta = ds.metadata["structures"]
  assert meta["sites"] == SITES and "O" in meta["scattering"]
  batch = ds.read_batch(np.arange(len(ds)), dataset_lib.READABLE_FIELDS)
  stored_rows = batch["has_structure"]
  assert meta["stored"] == int(stored_rows.sum()) > 0
  out = np.asarray(resimulate.simulate(batch, jnp.asarray(structures.coefficient_table(
      ds.metadata))))
  np.testing.assert_allclose(out[stored_rows], batch["xrd"][stored_rows].astype(np.float32),
                             atol=0.1)


def test_structures_too_large_for_the_padding_keep_only_their_pattern(tmp_path, fixtures_dir):
  build_dataset.prepare_dataset([os.path.join(fixtures_dir, "mp_small.csv.gz")], str(tmp_path),
                                workers=0, store_structures=True, structure_sites=2)
  ds = dataset_lib.open_dataset(str(tmp_path))
  batch = ds.read_batch(np.arange(len(ds)), ("has_structure", "atomic_numbers", "xrd"))
  assert len(ds) == 8 and ds.metadata["counts"]["errors"] == 0
  assert 0 < batch["has_structure"].sum() < len(ds)
  assert (batch["atomic_numbers"][~batch["has_structure"]] == 0).all()
  assert (batch["xrd"].max(axis=1) > 99).all()


def test_version_1_datasets_are_still_read(fixtures_dir):
  ds = dataset_lib.open_dataset(os.path.join(fixtures_dir, "v0", "dataset"))
  assert ds.metadata["schema_version"] == 1 and not ds.has_structures
  assert len(ds.read_batch(np.arange(2))["xrd"]) == 2
  with pytest.raises(ValueError, match="stores no structures"):
    ds.read_batch(np.arange(2), ("hkl",))


def test_simulated_source_needs_stored_structures(small_dataset, tmp_path):
  config = load_config("supervised", **{"data.path": small_dataset,
                                        "data.xrd_source": "simulated"})
  config.global_batch_size = 4
  with pytest.raises(ValueError, match="--store_structures"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_training_reads_simulated_patterns(stored, tmp_path):
  """Without effects the simulated patterns are the stored ones, so the first step's loss is the
  same; with the per-reflection effects on it is not."""
  def first_losses(name, **settings):
    config = load_config("supervised", **{"data.path": stored, "num_train_steps": 2,
                                          "log_every_steps": 1, "eval_every_steps": 2,
                                          "checkpoint_every_steps": 2, "tensorboard": False,
                                          **settings})
    config.global_batch_size = 4
    workdir = str(tmp_path / name)
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return [json.loads(line)["loss"] for line in f if '"loss"' in line][:2]

  stored_loss = first_losses("stored")
  simulated = first_losses("simulated", **{"data.xrd_source": "simulated"})
  effects = first_losses("effects", **{"data.xrd_source": "simulated", "augment.enabled": True,
                                       "augment.apply_prob": 0.0,
                                       "augment.structure.apply_prob": 1.0})
  assert simulated[0] == pytest.approx(stored_loss[0], rel=1e-3)
  assert all(np.isfinite(effects)) and effects[0] != pytest.approx(simulated[0], rel=1e-3)


def test_step_benchmark_times_the_simulated_source(stored):
  from test_benchmarks_train_step import check_rates, result_of, run_benchmark  # pylint: disable=g-import-not-at-top
  refused = run_benchmark("--config=configs/supervised.py:runlocal", "--steps=1", "--repeats=1",
                          "--config.data.xrd_source=simulated")
  assert refused.returncode != 0 and "--store_structures" in refused.stderr
  result = result_of(run_benchmark(
      "--config=configs/supervised.py:runlocal", "--steps=2", "--repeats=1", "--warmup=1",
      "--per_device_batch=4", f"--data={stored}", "--config.data.xrd_source=simulated"))
  for feed in ("synthetic", "data"):
    check_rates(result[feed], result)
  # The step now holds the structure factors: reflections × sites phases per sample.
  assert result["flops_per_sample"] > 2 * 2048 * SITES
