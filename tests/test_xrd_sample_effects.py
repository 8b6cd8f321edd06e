"""Sample effects of the XRD engine (strain, March–Dollase texture, Debye–Waller) on known cells."""

import math

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from pymatgen.core import Lattice  # pylint: disable=g-import-not-at-top
from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # pylint: disable=g-import-not-at-top

from xxact_jax import constants  # pylint: disable=g-import-not-at-top
from xxact_jax import xrd_engine  # pylint: disable=g-import-not-at-top

WAVELENGTH = constants.CU_KA_LINES[0]     # pymatgen's "CuKa", the engine's default
A = 5.64


@pytest.fixture(scope="module")
def nacl():
  return Structure.from_spacegroup("Fm-3m", Lattice.cubic(A), ["Na", "Cl"],
                                   [[0, 0, 0], [0.5, 0.5, 0.5]])


def _sticks(structure, effects=None):
  result = xrd_engine.simulate([structure], return_sticks=True, effects=effects)
  return result.patterns[0], result.sticks[0]


def _bragg(d):
  return 2 * math.degrees(math.asin(WAVELENGTH / (2 * d)))


def _height(sticks, two_theta, tol=1e-4):
  x, y = sticks
  hit = np.abs(x - two_theta) < tol
  assert hit.sum() == 1, f"no single stick at {two_theta}: {x}"
  return float(y[hit][0])


def _one(**fields):
  return xrd_engine.SampleEffects(**{k: np.asarray([v], np.float64) for k, v in fields.items()})


def test_neutral_effects_change_nothing(nacl):
  plain_pattern, plain = _sticks(nacl)
  pattern, sticks = _sticks(nacl, _one(strain=np.zeros((3, 3)), texture_hkl=[0, 0, 1],
                                       march_r=1.0, b_factor=0.0))
  np.testing.assert_allclose(pattern, plain_pattern, atol=1e-5)
  np.testing.assert_allclose(sticks[0], plain[0], atol=1e-9)
  np.testing.assert_allclose(sticks[1], plain[1], atol=1e-6)


def test_debye_waller_follows_exp_minus_2bs2(nacl):
  _, plain = _sticks(nacl)
  b = 1.3
  _, warm = _sticks(nacl, _one(b_factor=b))
  np.testing.assert_allclose(warm[0], plain[0], atol=1e-9)       # positions do not move
  s2 = (np.sin(np.radians(plain[0] / 2)) / WAVELENGTH) ** 2
  log_ratio = np.log(warm[1] / plain[1])
  slope = np.polyfit(s2, log_ratio, 1)[0]
  assert slope == pytest.approx(-2 * b, rel=1e-4)
  # The strongest low-angle peak loses least: high angles fade relative to it.
  assert warm[1][-1] / warm[1].max() < plain[1][-1] / plain[1].max()


def test_march_dollase_scales_each_family_by_its_angle_to_the_axis(nacl):
  _, plain = _sticks(nacl)
  r = 0.7
  _, textured = _sticks(nacl, _one(texture_hkl=[0, 0, 1], march_r=r))
  p200 = (r ** -3 + 2 * r ** 1.5) / 3                        # (002) along the axis, (200), (020) ⊥
  p111 = (r * r / 3 + 2 / (3 * r)) ** -1.5                    # cos² α = 1/3 for all four
  t200, t111 = _bragg(A / 2), _bragg(A / math.sqrt(3))
  ratio_plain = _height(plain, t200) / _height(plain, t111)
  ratio_textured = _height(textured, t200) / _height(textured, t111)
  assert ratio_textured / ratio_plain == pytest.approx(p200 / p111, rel=1e-4)


def test_uniaxial_strain_splits_the_cubic_family_by_braggs_law(nacl):
  strain = np.diag([0.0, 0.0, 0.01])
  _, sticks = _sticks(nacl, _one(strain=strain))
  # (200) and (020) stay; (002) moves to the angle of d = c(1+ε)/2.
  assert _height(sticks, _bragg(A / 2)) > 0
  assert _height(sticks, _bragg(A * 1.01 / 2)) > 0
  # Multiplicity: two of the three family members stay, so their peak is twice the moved one.
  assert _height(sticks, _bragg(A / 2)) / _height(sticks, _bragg(A * 1.01 / 2)) == pytest.approx(
      2 * _lorentz(_bragg(A / 2)) / _lorentz(_bragg(A * 1.01 / 2)), rel=2e-2)


def _lorentz(two_theta):
  t = math.radians(two_theta / 2)
  return (1 + math.cos(2 * t) ** 2) / (math.sin(t) ** 2 * math.cos(t))


def test_symmetric_strain_keeps_the_point_group():
  rng = np.random.default_rng(0)
  cubic = Structure.from_spacegroup("Fm-3m", Lattice.cubic(A), ["Na", "Cl"],
                                    [[0, 0, 0], [0.5, 0.5, 0.5]])
  tetragonal = Structure.from_spacegroup("P4/mmm", Lattice.tetragonal(3.9, 5.1), ["Ti", "O"],
                                         [[0, 0, 0], [0.5, 0.5, 0.5]])
  for structure, check in ((cubic, "cubic"), (tetragonal, "tetragonal")):
    ops = SpacegroupAnalyzer(structure).get_symmetry_operations(cartesian=True)
    eps = xrd_engine.symmetric_strain([op.rotation_matrix for op in ops], 0.01, rng)
    np.testing.assert_allclose(eps, eps.T, atol=1e-12)
    np.testing.assert_allclose(eps - np.diag(np.diag(eps)), 0, atol=1e-12)
    if check == "cubic":
      assert eps[0, 0] == pytest.approx(eps[1, 1], abs=1e-12) == pytest.approx(eps[2, 2])
    else:
      assert eps[0, 0] == pytest.approx(eps[1, 1], abs=1e-12)
      assert abs(eps[2, 2] - eps[0, 0]) > 1e-6
    strained = Structure(Lattice(structure.lattice.matrix @ (np.eye(3) + eps)),
                         structure.species, structure.frac_coords)
    assert SpacegroupAnalyzer(strained).get_crystal_system() == check


def test_bad_effects_name_the_field(nacl):
  with pytest.raises(ValueError, match="march_r"):
    xrd_engine.simulate([nacl], effects=_one(march_r=0.0))
  with pytest.raises(ValueError, match="b_factor.*shape"):
    xrd_engine.simulate([nacl], effects=xrd_engine.SampleEffects(b_factor=np.ones(2)))
  with pytest.raises(ValueError, match="strain.*non-finite"):
    xrd_engine.simulate([nacl], effects=_one(strain=np.full((3, 3), np.nan)))


def test_random_effects_in_range():
  rng = np.random.default_rng(1)
  effects = xrd_engine.random_effects([np.eye(3)[None]] * 50, rng)
  effects.check(50)
  lo, hi = xrd_engine.sample.MARCH_R_RANGE
  assert ((effects.march_r >= lo) & (effects.march_r <= hi)).all()
  assert ((effects.b_factor >= 0) & (effects.b_factor <= xrd_engine.sample.B_FACTOR_RANGE[1])).all()
  assert np.abs(effects.strain).max() < 0.1
