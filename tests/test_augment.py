"""Physics of the XRD augmentation (xxact_jax/data/augment.py) on a silicon-like pattern."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.data import augment

SI_A = 5.431  # Å
SI_REFLECTIONS = {(1, 1, 1): 1.0, (2, 2, 0): 0.6, (3, 1, 1): 0.35, (4, 2, 2): 0.15}
GRID = np.asarray(augment.grid(), np.float64)


def bragg_two_theta(hkl, wavelength=augment.CU_KA, a=SI_A):
  d = a / math.sqrt(sum(i * i for i in hkl))
  return 2 * math.degrees(math.asin(wavelength / (2 * d)))


def si_pattern(sigma=constants.XRD_SIGMA, wavelength=augment.CU_KA, a=SI_A):
  x = sum(h * np.exp(-0.5 * ((GRID - bragg_two_theta(hkl, wavelength, a)) / sigma) ** 2)
          for hkl, h in SI_REFLECTIONS.items())
  return jnp.asarray(100 * x / x.max(), jnp.float32)[None, :]


def peak_position(pattern, near, window=0.4):
  """Centroid of the peak within ±window of `near` (degrees)."""
  p = np.asarray(pattern, np.float64)[0]
  m = np.abs(GRID - near) < window
  return float((p[m] * GRID[m]).sum() / p[m].sum())


def test_zero_shift_moves_every_peak_by_exactly_that():
  x = si_pattern()
  y = augment.shift_peaks(x, zero_shift_deg=0.1)
  for hkl in SI_REFLECTIONS:
    t = bragg_two_theta(hkl)
    assert peak_position(y, t + 0.1) - peak_position(x, t) == pytest.approx(0.1, abs=2e-3)


def test_strain_moves_peaks_to_the_bragg_angle_of_the_strained_lattice():
  x = si_pattern()
  y = augment.shift_peaks(x, strain=0.01)
  for hkl in ((1, 1, 1), (4, 2, 2)):
    expected = bragg_two_theta(hkl, a=SI_A * 1.01)
    assert peak_position(y, expected) == pytest.approx(expected, abs=3e-3)
  # Not a constant shift: the high-angle peak moves about tan θ times further than (111).
  low = bragg_two_theta((1, 1, 1)) - bragg_two_theta((1, 1, 1), a=SI_A * 1.01)
  high = bragg_two_theta((4, 2, 2)) - bragg_two_theta((4, 2, 2), a=SI_A * 1.01)
  assert high > 3 * low


def test_sample_displacement_shift_shrinks_as_cos_theta():
  x = si_pattern()
  s, r = 0.2, 240.0
  y = augment.shift_peaks(x, displacement_mm=s, radius_mm=r)
  for hkl in ((1, 1, 1), (4, 2, 2)):
    t = bragg_two_theta(hkl)
    expected = math.degrees(-2 * s * math.cos(math.radians(t / 2)) / r)
    assert peak_position(y, t + expected) - peak_position(x, t) == pytest.approx(expected,
                                                                                 abs=2e-3)


def test_ka2_companion_sits_at_its_bragg_angle_with_half_the_height():
  # Narrow peaks so that the doublet of the (531) reflection near 88.1° is resolved.
  x = si_pattern(sigma=0.04)
  y = np.asarray(augment.ka_doublet(x))[0]
  t1 = bragg_two_theta((4, 2, 2), augment.CU_KA1)
  t2 = bragg_two_theta((4, 2, 2), augment.CU_KA2)
  assert t2 - t1 > 0.2
  assert peak_position(y[None], t1, 0.1) == pytest.approx(t1, abs=3e-3)
  assert peak_position(y[None], t2, 0.1) == pytest.approx(t2, abs=3e-3)
  # Heights of peaks two grid steps wide depend on where the grid cuts them; their areas do not.
  area = lambda t: y[np.abs(GRID - t) < 0.1].sum()
  assert area(t2) / area(t1) == pytest.approx(0.5, rel=0.03)


def test_broadening_keeps_the_area_and_widens_with_angle():
  x = si_pattern()
  fwhm = physics.scherrer_fwhm(jnp.cos(physics.theta(augment.grid()[None, :])), 300.0,
                               augment.CU_KA)
  # Gaussian kernels: nothing leaves the grid, the area is kept to float32 rounding.
  gaussian = augment.broaden(x, fwhm, 0.0)
  assert float(gaussian.sum()) == pytest.approx(float(x.sum()), rel=1e-4)
  # Pseudo-Voigt: each peak keeps its area within ±2° (less the Lorentzian tails beyond).
  y = augment.broaden(x, fwhm, 0.5)
  for hkl in SI_REFLECTIONS:
    t = bragg_two_theta(hkl)
    m = np.abs(GRID - t) < 2.0
    assert float(np.asarray(y)[0][m].sum()) == pytest.approx(float(np.asarray(x)[0][m].sum()),
                                                               rel=0.06)
  assert float(y.sum()) == pytest.approx(float(x.sum()), rel=0.01)
  for broadened in (gaussian, y):
    heights = [float(np.asarray(broadened)[0][np.abs(GRID - bragg_two_theta(h)) < 0.3].max()
                     / np.asarray(x)[0][np.abs(GRID - bragg_two_theta(h)) < 0.3].max())
               for h in ((1, 1, 1), (4, 2, 2))]
    assert heights[1] < heights[0] < 0.8      # wider at high angle (1 / cos θ)
  # The width follows the FWHM given: a Gaussian peak of σ0 broadened by FWHM f has
  # σ² = σ0² + (f / 2.3548)², read off its second moment.
  t = bragg_two_theta((1, 1, 1))
  m = np.abs(GRID - t) < 1.5
  p = np.asarray(augment.broaden(x, jnp.full((1, 1), 0.3), 0.0))[0][m]
  centre = (p * GRID[m]).sum() / p.sum()
  sigma = math.sqrt((p * (GRID[m] - centre) ** 2).sum() / p.sum())
  assert sigma == pytest.approx(math.sqrt(0.1 ** 2 + (0.3 / 2.3548) ** 2), rel=0.02)


def test_identical_keys_identical_batches_and_off_is_the_identity():
  x = jnp.tile(si_pattern(), (6, 1)).astype(jnp.float16)
  config = augment.default_config(enabled=True)
  run = jax.jit(lambda k, v: augment.augment_xrd(k, v, config))
  a, b, c = run(jax.random.key(1), x), run(jax.random.key(1), x), run(jax.random.key(2), x)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.shape == x.shape and a.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(a).max(axis=-1), 100.0, rtol=1e-5)
  assert (np.asarray(a) >= 0).all()
  assert augment.augment_xrd(jax.random.key(1), x, augment.default_config()) is x


def test_zero_and_nan_patterns_give_finite_results():
  x = jnp.stack([jnp.zeros((constants.NUM_XRD_POINTS,)),
                 jnp.full((constants.NUM_XRD_POINTS,), jnp.nan), si_pattern()[0]])
  y = augment.augment_xrd(jax.random.key(0), x, augment.default_config(enabled=True))
  assert np.isfinite(np.asarray(y)).all()


def test_crop_marks_the_unmeasured_range():
  x = si_pattern() + 1.0
  y = np.asarray(augment.crop(x, 20.0, 60.0))[0]
  mark = constants.UNMEASURED_INTENSITY
  assert (y[GRID < 20.0] == mark).all() and (y[GRID > 60.0] == mark).all()
  assert (y[(GRID >= 20.0) & (GRID <= 60.0)] > 0).all()


def test_counting_noise_scales_as_the_square_root_of_counts():
  flat = jnp.full((400, constants.NUM_XRD_POINTS), 50.0)
  for counts in (100.0, 10_000.0):
    noisy = np.asarray(augment.counting_noise(jax.random.key(0), flat, counts))
    # 50 % of `counts` at every point: relative spread sqrt(0.5 counts) / (0.5 counts).
    expected = 50.0 / math.sqrt(0.5 * counts)
    assert noisy.std() == pytest.approx(expected, rel=0.05)
    assert noisy.mean() == pytest.approx(50.0, rel=0.01)


def test_the_train_step_augments_with_keys_from_the_step():
  """configs/measured.py turns augmentation on inside the jitted step; the same state gives the
  same loss (so a resumed run repeats it), and the loss differs from the unaugmented step's."""
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  config = defaults.load_config_file("configs/measured.py", "runlocal")
  assert config.augment.enabled and 0 < config.augment.apply_prob < 1
  config.augment.apply_prob = 1.0     # every one of the 4 patterns augmented
  assert not defaults.load_config_file("configs/supervised.py").augment.enabled
  model, tx, schedule, state, batch = silicon_training(config, 4)
  stats = {"formation_energy_per_atom": {"mean": 0.0, "std": 1.0}}
  losses = {}
  for enabled in (True, False):
    config.augment.enabled = enabled
    train_step = jax.jit(step_lib.make_train_step(model, tx, schedule, config, stats))
    first = float(train_step(state, batch)[1]["loss"])
    again = float(train_step(state, batch)[1]["loss"])
    assert np.isfinite(first) and first == again
    losses[enabled] = first
  assert losses[True] != losses[False]


def silicon_training(config, n):
  """(model, tx, schedule, initial state, batch of `n` silicon patterns) for train-step tests."""
  from xxact_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  model = build_model(defaults.model_of(config))
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, 10, config.trainable)
  state = jax.jit(step_lib.make_init_fn(model, tx, 4))(jax.random.key(0))
  batch = {"species": jnp.array([[14, 0, 0, 0]] * n, jnp.int32),
           "fractions": jnp.array([[1.0, 0, 0, 0]] * n, jnp.float32),
           "xrd": jnp.tile(si_pattern(), (n, 1)).astype(jnp.float16),
           "formation_energy_per_atom": jnp.zeros((n,), jnp.float32),
           "crystal_system": jnp.full((n,), 6, jnp.int32)}
  return model, tx, schedule, state, batch
