"""What the kernels share: where they run, their dropout bits, their launch parameters.

Dropout inside a kernel cannot call jax.random; each kernel hashes the global position of an
element with a per-call seed (two 32-bit words drawn from the step's dropout key) through two
rounds of a 32-bit integer mixer, and keeps the element when the top `bits` of the hash fall below
the quantised keep threshold (models/layers.py `quantised_keep_threshold`), so the rate is the
same as the unfused path's at the same `dropout_bits` (32 is drawn at 24 bits: 0.9 → 0.9 ± 6e-8).
The backward pass recomputes the same mask from the same seed. `keep_mask` gives it as an array.
"""

import os

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from xxact_jax.models import layers

KERNEL_BITS_MAX = 24


def interpret_default() -> bool:
  """Interpret mode everywhere but on a GPU (XXACT_PALLAS_INTERPRET=1|0 overrides)."""
  forced = os.environ.get("XXACT_PALLAS_INTERPRET")
  if forced is not None:
    return forced == "1"
  return jax.default_backend() != "gpu"


def resolve_interpret(interpret: bool | None) -> bool:
  return interpret_default() if interpret is None else bool(interpret)


def num_warps(default: int) -> int:
  """Triton warps per program; XXACT_PALLAS_NUM_WARPS overrides (a sweep can set it)."""
  return int(os.environ.get("XXACT_PALLAS_NUM_WARPS", default))


def compiler_params(warps: int) -> plgpu.CompilerParams:
  return plgpu.CompilerParams(num_warps=warps, num_stages=1)


def next_pow2(n: int, minimum: int = 16) -> int:
  return max(minimum, pl.next_power_of_2(int(n)))


def kernel_bits(bits: int) -> int:
  return min(int(bits), KERNEL_BITS_MAX)


def keep_threshold(rate: float, bits: int) -> tuple[int, float]:
  """(threshold on the top kernel_bits(bits) bits of a hash, scale of a kept element)."""
  b = kernel_bits(bits)
  threshold = layers.quantised_keep_threshold(1.0 - rate, b)
  return threshold, 2 ** b / threshold


def _mix(x):
  """A 32-bit integer mixer (xor-shift-multiply, 'lowbias32'): a bijection of uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hash_bits(counter, seed0, seed1):
  """uint32 hash of uint32 `counter` under the seed words (works inside kernels and outside)."""
  return _mix(_mix(counter ^ seed0) + seed1)


def keep_from_counter(counter, seed0, seed1, rate: float, bits: int):
  """bool: elements kept by dropout at `rate`, from their uint32 global positions."""
  b = kernel_bits(bits)
  threshold, _ = keep_threshold(rate, bits)
  top = (hash_bits(counter, seed0, seed1) >> (32 - b)).astype(jnp.int32)
  return top < threshold


def seed_words(rng: jax.Array) -> jax.Array:
  """int32[2] seed words of a kernel call, drawn from a dropout key."""
  return jax.lax.bitcast_convert_type(jax.random.bits(rng, (2,), jnp.uint32), jnp.int32)


def load_seed(seed_ref):
  """The two seed words as uint32 scalars, inside a kernel."""
  s0 = seed_ref[0].astype(jnp.uint32)
  s1 = seed_ref[1].astype(jnp.uint32)
  return s0, s1


def keep_mask(seed: jax.Array, shape: tuple, rate: float, bits: int) -> jax.Array:
  """bool[shape]: the kernels' keep mask of a row-major array of `shape` (element i at
  counter i), for tests and references."""
  n = 1
  for d in shape:
    n *= d
  counter = jnp.arange(n, dtype=jnp.uint32).reshape(shape)
  s = seed.astype(jnp.uint32)
  return keep_from_counter(counter, s[0], s[1], rate, bits)
