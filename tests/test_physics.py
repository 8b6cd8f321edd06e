"""Bragg's law on numpy arrays, jax arrays and Python numbers (xxact_jax/physics.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import physics

CU, MO = 1.54184, 0.71073
TWO_THETA = np.array([5.0, 30.0, 90.0, 150.0])


def _round_trip(two_theta, wavelength=CU):
  return physics.two_theta(physics.bragg_sin_theta(physics.inverse_d(two_theta, wavelength),
                                                   wavelength))


def test_bragg_round_trip_on_numpy_stays_float64():
  inverse_d = physics.inverse_d(TWO_THETA, CU)
  # λ = 2 d sin θ by hand.
  np.testing.assert_allclose(1 / inverse_d, CU / (2 * np.sin(np.radians(TWO_THETA / 2))),
                             rtol=1e-15)
  back = _round_trip(TWO_THETA)
  assert isinstance(back, np.ndarray) and back.dtype == np.float64
  np.testing.assert_allclose(back, TWO_THETA, rtol=1e-13)
  scalar = _round_trip(30.0)
  assert type(scalar) is float and scalar == pytest.approx(30.0, rel=1e-13)


def test_jax_path_jits_and_agrees_with_numpy():
  out = jax.jit(_round_trip)(jnp.asarray(TWO_THETA, jnp.float32))
  assert isinstance(out, jax.Array) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, TWO_THETA, rtol=2e-5)
  mo = np.array([10.0, 40.0, 80.0])                # 80° with Mo is beyond Cu's reach
  expected = physics.rescale_two_theta(mo, CU / MO)
  got = jax.jit(lambda t: physics.rescale_two_theta(t, CU / MO))(jnp.asarray(mo, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert np.isnan(expected[2]) and np.isnan(got[2])
  assert physics.rescale_two_theta(mo, CU / MO, unreachable=None)[2] == 180.0
