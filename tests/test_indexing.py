"""Powder indexing of cubic, tetragonal, hexagonal and orthorhombic lattices
(inference/indexing.py)."""

import itertools

import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax.data import xrd as xrd_lib
from xxact_jax.inference import answers
from xxact_jax.inference import identification
from xxact_jax.inference import indexing
from xxact_jax.inference import peaks

SYSTEM = {name: i for i, name in enumerate(constants.CRYSTAL_SYSTEMS)}


def _lines(reciprocal_metric, allowed=lambda h, k, l: True, zero=0.0, limit=6):
  """2θ (degrees, grid wavelength) of the distinct reflections inside 5–90°, plus `zero`."""
  q = set()
  for hkl in itertools.product(range(-limit, limit + 1), repeat=3):
    if any(hkl) and allowed(*hkl):
      v = np.array(hkl, np.float64)
      q.add(round(float(v @ reciprocal_metric @ v), 9))
  two_theta = indexing.two_theta_of(np.array(sorted(q)))
  return two_theta[(two_theta > 5) & (two_theta < 90)] + zero


def _metric(a, b, c, alpha=90.0, beta=90.0, gamma=90.0):
  ca, cb, cg = (np.cos(np.radians(x)) for x in (alpha, beta, gamma))
  direct = np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca],
                     [a * c * cb, b * c * ca, c * c]])
  return np.linalg.inv(direct)


def _face_centred(h, k, l):
  return h % 2 == k % 2 == l % 2


def test_rock_salt_indexes_as_face_centred_cubic_with_its_zero_shift():
  lines = _lines(_metric(5.64, 5.64, 5.64), _face_centred, zero=0.05)
  result = indexing.index_lines(lines, np.ones_like(lines))
  assert (result.family, result.centring) == ("cubic", "F")
  assert result.a == pytest.approx(5.64, abs=1e-3)
  assert result.zero_shift == pytest.approx(0.05, abs=2e-3)
  assert result.indexed == result.lines == lines.size
  assert result.crystal_systems == (SYSTEM["cubic"],)


def test_rutile_indexes_as_tetragonal():
  lines = _lines(_metric(4.594, 4.594, 2.959), zero=-0.03)
  result = indexing.index_lines(lines, np.ones_like(lines))
  assert result.family == "tetragonal"
  assert (result.a, result.c) == (pytest.approx(4.594, abs=2e-3), pytest.approx(2.959, abs=2e-3))
  assert result.crystal_systems == (SYSTEM["tetragonal"],)


def test_hexagonal_axes_allow_two_systems_and_a_rhombohedral_lattice_one():
  hexagonal = _lines(_metric(3.25, 3.25, 5.0, gamma=120.0))
  result = indexing.index_lines(hexagonal, np.ones_like(hexagonal))
  assert (result.family, result.centring) == ("hexagonal", "P")
  assert set(result.crystal_systems) == {SYSTEM["trigonal"], SYSTEM["hexagonal"]}
  # Calcite's cell in hexagonal axes, obverse rhombohedral centring (−h + k + l = 3n).
  rhombohedral = _lines(_metric(4.99, 4.99, 17.06, gamma=120.0),
                        lambda h, k, l: (-h + k + l) % 3 == 0)
  result = indexing.index_lines(rhombohedral, np.ones_like(rhombohedral))
  assert (result.family, result.centring) == ("hexagonal", "R")
  assert result.a == pytest.approx(4.99, abs=5e-3) and result.c == pytest.approx(17.06, abs=0.02)
  assert result.crystal_systems == (SYSTEM["trigonal"],)


def test_orthorhombic_lattices_index_with_their_centring_and_zero_shift():
  primitive = _lines(_metric(4.1, 5.3, 7.9), zero=0.04)
  result = indexing.index_lines(primitive, np.ones_like(primitive))
  assert (result.family, result.centring) == ("orthorhombic", "P")
  assert (result.a, result.b, result.c) == (pytest.approx(4.1, abs=2e-3),
                                            pytest.approx(5.3, abs=2e-3),
                                            pytest.approx(7.9, abs=3e-3))
  assert result.zero_shift == pytest.approx(0.04, abs=2e-3)
  assert result.crystal_systems == (SYSTEM["orthorhombic"],)
  assert answers.lattice_json(result)["b"] == pytest.approx(5.3, abs=2e-3)
  # Body centring halves the reflections a primitive cell would allow: the I cell's M_N is the
  # better, with every line still indexed.
  body = _lines(_metric(5.2, 9.7, 7.3), lambda h, k, l: (h + k + l) % 2 == 0)
  result = indexing.index_lines(body, np.ones_like(body))
  assert (result.family, result.centring, result.indexed) == ("orthorhombic", "I", body.size
                                                              if body.size < 20 else 20)
  assert sorted((result.a, result.b, result.c)) == [pytest.approx(x, abs=3e-3)
                                                    for x in (5.2, 7.3, 9.7)]


def test_higher_symmetry_comes_first_and_low_symmetry_is_not_indexed():
  # A tetragonal cell indexes as orthorhombic too (a = b); the tetragonal lattice is chosen.
  rutile = _lines(_metric(4.594, 4.594, 2.959))
  assert indexing.index_lines(rutile, np.ones_like(rutile)).family == "tetragonal"
  # Left alone, the orthorhombic search refuses a metric with two equal edges.
  two_theta, intensity = peaks.select_lines(rutile, np.ones_like(rutile))
  assert indexing.search_orthorhombic(two_theta, intensity > 0) is None
  triclinic = _lines(_metric(5.1, 6.3, 7.7, 83.0, 97.0, 104.0))
  assert indexing.index_lines(triclinic, np.ones_like(triclinic)) is None
  monoclinic = _lines(_metric(9.1, 6.3, 11.7, beta=95.0))
  assert indexing.index_lines(monoclinic, np.ones_like(monoclinic)) is None
  # Fewer lines than three parameters and a zero shift need.
  few = _lines(_metric(4.1, 5.3, 7.9))[:indexing.MIN_LINES_THREE_PARAMETERS - 1]
  assert indexing.index_lines(few, np.ones_like(few)) is None


def test_unindexed_strong_lines_and_too_few_lines_refuse_an_indexing():
  lines = _lines(_metric(5.64, 5.64, 5.64), _face_centred)
  intensities = np.ones_like(lines)
  # An impurity line as strong as the phase's own.
  with_impurity = np.append(lines, 30.0)
  assert indexing.index_lines(with_impurity, np.append(intensities, 1.0)) is None
  # The same line weak is tolerated.
  assert indexing.index_lines(with_impurity, np.append(intensities, 0.1)).family == "cubic"
  assert indexing.index_lines(lines[:indexing.MIN_LINES - 1],
                              intensities[:indexing.MIN_LINES - 1]) is None
  # Six lines of a tetragonal cell: too few for two parameters and a zero shift.
  tetragonal = _lines(_metric(4.594, 4.594, 2.959))[:6]
  assert indexing.index_lines(tetragonal, np.ones_like(tetragonal)) is None


def test_a_noisy_pattern_with_background_indexes_from_the_grid():
  grid = constants.two_theta_grid()
  lines = _lines(_metric(5.431, 5.431, 5.431), _face_centred, zero=0.03)
  rng = np.random.default_rng(0)
  pattern = xrd_lib.smear_sticks(lines, rng.uniform(0.3, 1.0, lines.size), 0.08)
  pattern = 100 * pattern / pattern.max() + 20 * np.exp(-(grid - 5) / 15) + 5
  pattern = rng.poisson(pattern * 20) / 20.0
  pattern[grid < 12] = constants.UNMEASURED_INTENSITY
  result = indexing.index_pattern(pattern)
  assert (result.family, result.centring) == ("cubic", "F")
  assert result.a == pytest.approx(5.431, abs=3e-3)
  # A flat, peakless scan indexes as nothing.
  assert indexing.index_pattern(np.full(constants.NUM_XRD_POINTS, 10.0)) is None


def test_restricting_keeps_the_models_ranking_inside_the_allowed_systems():
  result = indexing.Indexing("hexagonal", "P", 3.25, 5.0, 0.0, 50.0, 20, 20)
  outputs = {"crystal_system": np.array([[0.05, 0.5, 0.1, 0.05, 0.1, 0.15, 0.05]]),
             "spacegroup_number": np.full((1, 230), 1 / 230)}
  model = outputs["crystal_system"][0].copy()
  identification.Identification(lattice=result).apply(outputs, 0)
  # The lattice's share (LATTICE_WEIGHT) goes to its systems in the model's ratio; the model's
  # own probabilities share the rest, so the indexed answer is not certain.
  w = identification.LATTICE_WEIGHT
  np.testing.assert_allclose(outputs["crystal_system"][0],
                             w * np.array([0, 0, 0, 0, 0.4, 0.6, 0]) + (1 - w) * model, atol=1e-6)
  assert outputs["crystal_system"][0].argmax() == 5
  groups = np.flatnonzero(outputs["spacegroup_number"][0]) + 1
  assert (groups.min(), groups.max()) == (143, 194)
  assert outputs["spacegroup_number"][0].sum() == pytest.approx(1.0)
  # An orthorhombic lattice: orthorhombic groups only (16–74).
  outputs = {"spacegroup_number": np.full((1, 230), 1 / 230)}
  lattice = indexing.Indexing("orthorhombic", "P", 4.1, 7.9, 0.0, 50.0, 20, 20, b=5.3)
  identification.Identification(lattice=lattice).apply(outputs, 0)
  groups = np.flatnonzero(outputs["spacegroup_number"][0]) + 1
  assert (groups.min(), groups.max(), groups.size) == (16, 74, 59)
  # All mass outside: uniform over the allowed classes.
  np.testing.assert_allclose(identification.restrict(np.eye(3)[0], np.array([False, True, True])),
                             [0, 0.5, 0.5])


def test_apply_keeps_the_models_answer_beside_the_indexing():
  result = indexing.Indexing("cubic", "F", 5.64, 5.64, 0.0, 100.0, 9, 9)
  probabilities = np.array([0.1, 0.6, 0.1, 0.05, 0.05, 0.05, 0.05])
  groups = np.zeros(230)
  groups[[13, 224, 61]] = [0.6, 0.3, 0.1]        # P2_1/c, Fm-3m, Pnma
  outputs = {"crystal_system": probabilities[None].copy(), "spacegroup_number": groups[None]}
  targets = ("crystal_system", "spacegroup_number")
  model = answers.format_prediction({k: v[0] for k, v in outputs.items()}, targets)
  answer = answers.identified_prediction({k: v[0] for k, v in outputs.items()}, targets,
                                         identification.Identification(lattice=result))
  assert answer["crystal_system"]["prediction"] == "cubic"
  assert answer["crystal_system"]["model_prediction"] == "monoclinic"
  assert answer["spacegroup_number"]["top5"][0] == {"spacegroup_number": 225, "probability": 1.0}
  assert answer["spacegroup_number"]["model_top5"][0]["spacegroup_number"] == 14
  assert answer["indexing"]["lattice"] == "cubic"
  assert answers.identified_prediction({k: v[0] for k, v in outputs.items()}, targets,
                                       identification.Identification()) == model


def test_a_measured_like_orthorhombic_pattern_indexes_from_the_grid():
  grid = constants.two_theta_grid()
  lines = _lines(_metric(5.2, 9.7, 7.3), lambda h, k, l: (h + k + l) % 2 == 0, zero=-0.04)
  rng = np.random.default_rng(2)
  pattern = xrd_lib.smear_sticks(lines, rng.uniform(0.2, 1.0, lines.size), 0.06)
  pattern = 100 * pattern / pattern.max() + 10 * np.exp(-(grid - 5) / 20) + 3
  pattern = rng.poisson(pattern * 50) / 50.0
  result = indexing.index_pattern(pattern)
  assert result.family == "orthorhombic"
  assert sorted((result.a, result.b, result.c)) == [pytest.approx(x, abs=0.01)
                                                    for x in (5.2, 7.3, 9.7)]
  assert result.zero_shift == pytest.approx(-0.04, abs=0.01)


def test_degenerate_patterns_index_as_nothing_without_raising():
  n = constants.NUM_XRD_POINTS
  assert indexing.index_pattern(np.full(n, constants.UNMEASURED_INTENSITY)) is None
  spike = np.zeros(n)
  spike[2000] = 100.0
  assert indexing.index_pattern(spike) is None
  gap = np.full(n, 5.0)
  gap[1000:1010] = np.nan
  assert indexing.index_pattern(gap) is None
  noise = np.random.default_rng(1).uniform(0, 100, n)
  assert indexing.index_pattern(noise) == indexing.index_pattern(noise.copy())
  with pytest.raises(ValueError, match="4250-point grid"):
    indexing.index_pattern(np.zeros(100))
