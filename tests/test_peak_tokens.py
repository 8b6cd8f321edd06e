"""model.xrd_stem="peaks" (models/peak_tokens.py): the pattern read as a list of peaks, whatever
the instrument added to the profile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax.models import build_model
from xxact_jax.models import model_config
from xxact_jax.models import peak_tokens

from float32_tolerance import assert_close
from test_models import random_batch

GRID = constants.two_theta_grid()
POSITIONS = np.array([21.37, 30.41, 35.9, 43.52, 57.03, 62.18, 74.66])
HEIGHTS = np.array([0.35, 1.0, 0.6, 0.2, 0.08, 0.45, 0.12])


def pattern(sigma=0.1, positions=POSITIONS, heights=HEIGHTS):
  y = sum(h * np.exp(-0.5 * ((GRID - p) / sigma) ** 2) for p, h in zip(positions, heights))
  return 100.0 * y / y.max()


def found(x, k=16):
  two_theta, height, width, valid = (np.asarray(a)[0] for a in
                                     peak_tokens.find_peaks(jnp.asarray(x[None]), k))
  order = np.argsort(two_theta[valid])
  return two_theta[valid][order], height[valid][order], width[valid][order]


def test_positions_heights_and_widths_of_gaussian_peaks():
  two_theta, height, width = found(pattern())
  np.testing.assert_allclose(two_theta, POSITIONS, atol=0.005)
  np.testing.assert_allclose(height, HEIGHTS, atol=0.02)
  # σ read from the curvature: the 0.1° peak widened by the finder's 0.03° smoothing.
  np.testing.assert_allclose(width, np.hypot(0.1, 0.03), rtol=0.05)
  _, _, broad = found(pattern(sigma=0.25))
  assert np.all(broad > 2 * width)


def test_background_range_and_noise_leave_the_list_alone():
  clean = pattern()
  hump = 30 * np.exp(-0.5 * ((GRID - 25) / 8) ** 2) + 10 - 0.05 * GRID
  two_theta, height, _ = found(clean + hump)
  np.testing.assert_allclose(two_theta, POSITIONS, atol=0.01)
  np.testing.assert_allclose(height, HEIGHTS, atol=0.05)
  # A scan from 25° to 70°: the peaks outside are absent, and its edges make none.
  cropped = np.where((GRID >= 25) & (GRID <= 70), clean + 20, constants.UNMEASURED_INTENSITY)
  two_theta, _, _ = found(cropped)
  inside = POSITIONS[(POSITIONS > 25) & (POSITIONS < 70)]
  np.testing.assert_allclose(two_theta, inside, atol=0.01)
  # Counting noise of a scan with ~10,000 counts at its strongest peak: no spurious peak
  # reaches 1 % of it.
  rng = np.random.default_rng(0)
  counts = rng.poisson(100 * (clean + 5)).astype(np.float64)
  two_theta, _, _ = found(100 * counts / counts.max())
  np.testing.assert_allclose(two_theta, POSITIONS, atol=0.02)


def test_weak_peaks_below_the_threshold_and_beyond_k_are_dropped():
  heights = HEIGHTS.copy()
  heights[3] = 0.005                        # half of min_relative_height
  two_theta, _, _ = found(pattern(heights=heights))
  np.testing.assert_allclose(two_theta, np.delete(POSITIONS, 3), atol=0.005)
  two_theta, height, _ = found(pattern(), k=3)
  np.testing.assert_allclose(np.sort(height), np.sort(HEIGHTS)[-3:], atol=0.02)


def tiny(name, max_peaks=16):
  c = model_config(name, "tiny")
  c.dtype = "float32"
  c.targets = ("crystal_system",)
  c.xrd_stem = "peaks"
  c.xrd_max_peaks = max_peaks
  return c


@pytest.mark.parametrize("name", ["xxact", "xrd_transformer"])
def test_absent_peaks_change_nothing_and_a_background_little(name):
  species, fractions, _ = random_batch()
  xrd = jnp.asarray(np.stack([pattern(), pattern(heights=HEIGHTS[::-1]), pattern(sigma=0.2)]),
                    jnp.float32)
  outputs = {}
  for k in (16, 24):                         # 7 peaks: the extra slots are all masked
    model = build_model(tiny(name, k))
    params = model.init(jax.random.key(0), species, fractions, xrd)["params"]
    outputs[k] = model.apply({"params": params}, species, fractions, xrd)
  assert_close(outputs[24]["crystal_system"], outputs[16]["crystal_system"])
  assert not np.allclose(outputs[16]["crystal_system"][0], outputs[16]["crystal_system"][1],
                         atol=1e-3)
  shifted = model.apply({"params": params}, species, fractions, xrd + 15.0)
  assert_close(shifted["crystal_system"], outputs[24]["crystal_system"])


def test_peaks_stem_has_no_masked_modelling():
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  config = defaults.load_config_file("configs/mxm.py", "runlocal")
  config.model.xrd_stem = "peaks"
  with pytest.raises(ValueError, match="peaks"):
    defaults.model_of(config)
  model = build_model(tiny("xrd_transformer"))
  species, fractions, xrd = random_batch()
  with pytest.raises(ValueError, match="peaks"):
    model.init(jax.random.key(0), species, fractions, xrd,
               xrd_mask=jnp.zeros((3, constants.XRD_NUM_TOKENS), bool))
