"""Matrix-product FLOPs counted on a step's jaxpr (the MFU numerator on every backend)."""

import jax
import jax.numpy as jnp
import pytest

from xxact_jax.training import flops


def test_a_matmul_counts_two_m_n_k():
  a, b = jnp.ones((128, 256)), jnp.ones((256, 64))
  assert flops.step_flops_per_device(jax.jit(lambda x, y: jnp.tanh(x @ y)), (a, b), 1) == (
      2 * 128 * 256 * 64)


def test_backward_adds_two_products_and_devices_divide():
  a, b = jnp.ones((4, 8, 16)), jnp.ones((4, 16, 32))
  forward = 2 * 4 * 8 * 16 * 32
  loss = lambda x, y: jnp.sum(jnp.einsum("bij,bjk->bik", x, y) ** 2)
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  # The forward product and one per gradient.
  assert flops.step_flops_per_device(step, (a, b), 1) == 3 * forward
  assert flops.step_flops_per_device(step, (a, b), 4) == 3 * forward / 4


def test_scan_and_convolution():
  w = jnp.ones((8, 8))

  def body(carry, _):
    return carry @ w, None

  scanned = jax.jit(lambda x: jax.lax.scan(body, x, None, length=5)[0])
  assert flops.step_flops_per_device(scanned, (jnp.ones((2, 8)),), 1) == 5 * 2 * 2 * 8 * 8
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), "VALID"))
  x, k = jnp.ones((3, 4, 50)), jnp.ones((6, 4, 5))   # NCW, OIW
  # 3 x 6 x 46 outputs, 4 input channels x 5 taps each.
  assert flops.step_flops_per_device(conv, (x, k), 1) == 2 * 3 * 6 * 46 * 4 * 5


@pytest.mark.parametrize("name,expected", [("NVIDIA H100 80GB HBM3", 989e12),
                                           ("NVIDIA H100 PCIe", 756e12)])
def test_peak_rates_by_device_kind(name, expected):
  class Device:
    device_kind = name
  assert flops.peak_flops_per_device(Device()) == expected
