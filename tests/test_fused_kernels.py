"""models/kernels/ (issue 29): the Pallas kernels against the einsum / XLA path, in Pallas
interpret mode on this CPU, and their lowering to Triton for the GPU.

Shapes are tiny and padded on purpose (head dim 8 → 16, T = 6 in 16-row blocks, D = 24 → 32,
rows split over several programs) so that every masking path runs; each test compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np

from xxact_jax import stored_config
from xxact_jax.models import layers
from xxact_jax.models import model_config
from xxact_jax.models.kernels import attention
from xxact_jax.models.kernels import bias as bias_kernel
from xxact_jax.models.kernels import common
from xxact_jax.models.kernels import norm


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _scale(tree):
  return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32)))) for x in jax.tree.leaves(tree))


def test_self_attention_matches_the_einsum_path_forward_and_backward():
  b, t, h, dh, rate, bits = 5, 6, 2, 8, 0.3, 16
  qkv = jax.random.normal(jax.random.key(0), (b, t, 3, h, dh))
  mask = jnp.arange(t)[None, :] < jnp.array([6, 3, 1, 5, 2])[:, None]
  seed = common.seed_words(jax.random.key(3))
  keep = attention.keep_mask(seed, b, h, t, t, rate, bits)
  w = jax.random.normal(jax.random.key(4), (b, t, h, dh))

  def fused(x):
    return attention.self_attention(x, mask, seed, rate, bits, rows=16)

  def reference(x):
    return attention.reference(x[:, :, 0], x[:, :, 1], x[:, :, 2], mask, keep, rate, bits)

  run = jax.jit(lambda x: [(f(x), jax.grad(lambda y: jnp.sum(f(y) * w))(x))
                           for f in (fused, reference)])
  (out, grad), (out_ref, grad_ref) = run(qkv)
  assert out.shape == (b, t, h, dh)
  np.testing.assert_allclose(out, out_ref, atol=2e-6)
  np.testing.assert_allclose(grad, grad_ref, atol=5e-6)
  # Three sequences per program here: a program's padding rows and its neighbours' keys count
  # for nothing, and dq, dk, dv land in their own slots of one gradient.
  assert attention.make_dims(b, t, t, h, dh, 3, 3, (0, 1, 2), rate, bits, True, 16).per_block == 2


def test_cross_attention_in_bfloat16_agrees_to_bfloat16_tolerance():
  b, tq, tk, h, dh, rate, bits = 3, 5, 4, 2, 16, 0.2, 8
  q = jax.random.normal(jax.random.key(1), (b, tq, h, dh)).astype(jnp.bfloat16)
  kv = jax.random.normal(jax.random.key(2), (b, tk, 2, h, dh)).astype(jnp.bfloat16)
  mask = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)   # row 1: every key masked
  seed = common.seed_words(jax.random.key(5))
  keep = attention.keep_mask(seed, b, h, tq, tk, rate, bits)
  w = jax.random.normal(jax.random.key(6), (b, tq, h, dh))

  def fused(q, kv):
    return attention.cross_attention(q, kv, mask, seed, rate, bits, rows=16)

  def reference(q, kv):   # the einsum path in float32 on the same bfloat16 inputs
    q, kv = q.astype(jnp.float32), kv.astype(jnp.float32)
    return attention.reference(q, kv[:, :, 0], kv[:, :, 1], mask, keep, rate, bits)

  def both(f):
    out = f(q, kv)
    grads = jax.grad(lambda a, c: jnp.sum(f(a, c).astype(jnp.float32) * w), argnums=(0, 1))(q, kv)
    return out, grads

  (out, grads), (out_ref, grads_ref) = jax.jit(lambda: (both(fused), both(reference)))()
  assert out.dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
  assert _max_diff(out, out_ref) < 0.02 * _scale(out_ref)
  assert _max_diff(grads, grads_ref) < 0.02 * _scale(grads_ref)


def test_attention_dropout_is_unbiased_at_the_configured_rate():
  b, t, h, dh, rate, bits = 48, 18, 2, 16, 0.1, 16
  qkv = jax.random.normal(jax.random.key(7), (b, t, 3, h, dh))
  qkv = qkv.at[:, :, 2].set(1.0)     # values of 1: each output is the sum of its kept weights
  seed = common.seed_words(jax.random.key(8))
  out = np.asarray(jax.jit(lambda x: attention.self_attention(x, None, seed, rate, bits))(qkv))
  # E[sum of kept weights × 1/P(keep)] = 1 for every query.
  assert abs(out.mean() - 1.0) < 0.01, out.mean()
  kept = np.asarray(attention.keep_mask(seed, b, h, t, t, rate, bits))
  expected = layers.quantised_keep_threshold(1 - rate, bits) / 2 ** bits
  assert abs(kept.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / kept.size)
  # Another seed, another mask; 32-bit draws are made at 24 bits.
  other = np.asarray(attention.keep_mask(common.seed_words(jax.random.key(9)), b, h, t, t,
                                         rate, bits))
  assert 0.1 < np.mean(kept != other) < 0.3
  assert common.keep_threshold(0.1, 32)[0] == round(0.9 * 2 ** 24)


def test_residual_layer_norm_matches_layer_norm_of_the_dropped_residual():
  rate, bits = 0.25, 16
  x = jax.random.normal(jax.random.key(0), (3, 7, 24))
  h = jax.random.normal(jax.random.key(1), (3, 7, 24))
  scale = 1 + 0.1 * jax.random.normal(jax.random.key(2), (24,))
  shift = 0.1 * jax.random.normal(jax.random.key(3), (24,))
  seed = common.seed_words(jax.random.key(4))
  keep = norm.keep_mask(seed, (21, 24), rate, bits).reshape(x.shape)
  _, kept_scale = common.keep_threshold(rate, bits)
  w = jax.random.normal(jax.random.key(9), x.shape)

  def reference(x, h, g, s):
    z = x + jnp.where(keep, h * kept_scale, 0.0)
    return layers.layer_norm("n", jnp.float32).apply({"params": {"scale": g, "bias": s}}, z)

  def fused(x, h, g, s):   # 4-row tiles, 6 tiles over 2 backward programs: the loop and its tail
    return norm.residual_layer_norm(x, h, g, s, seed, rate, bits, tile_elements=128, programs=2)

  def both(f):
    return f(x, h, scale, shift), jax.grad(lambda *a: jnp.sum(f(*a) * w),
                                           argnums=(0, 1, 2, 3))(x, h, scale, shift)

  (y, grads), (y_ref, grads_ref) = jax.jit(lambda: (both(fused), both(reference)))()
  np.testing.assert_allclose(y, y_ref, atol=2e-5)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, atol=5e-5)
  assert norm.make_dims(21, 24, rate, bits, 1e-5, True, 128, 2).iters == 3


def test_bias_grad_dense_keeps_dense_general_parameters_and_gradients():
  x = jax.random.normal(jax.random.key(0), (3, 5, 2, 6))
  w = jax.random.normal(jax.random.key(2), (3, 5, 7))
  dense = layers.dense_general(7, "out", jnp.float32, axis=(-2, -1))
  fused = bias_kernel.Dense(7, axis=(-2, -1), dtype=jnp.float32, name="out")
  params = dense.init(jax.random.key(1), x)
  assert _max_diff(params, fused.init(jax.random.key(1), x)) == 0.0
  params = jax.tree.map(lambda p: p + 0.3, params)

  def grads(m):
    return jax.grad(lambda p, x: jnp.sum(m.apply(p, x) * w), argnums=(0, 1))(params, x)

  got, want = jax.jit(lambda: (grads(fused), grads(dense)))()
  assert _max_diff(got, want) < 1e-5
  # The column sum alone, over several programs and a partial column tile.
  y = jax.random.normal(jax.random.key(3), (37, 300))
  total = bias_kernel.column_sum(y, tile_elements=512, programs=3)
  np.testing.assert_allclose(total, y.sum(0), atol=1e-4)


def test_switches_keep_the_layer_and_its_gradients():
  """A decoder layer (self- and cross-attention, three residual norms, feed-forward) with all
  three switches: same parameters, same output and gradients without dropout, and fresh
  dropout per key with it."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  memory = jax.random.normal(jax.random.key(1), (2, 3, 16))
  memory_mask = jnp.array([[True, True, False], [True, True, True]])

  def layer(dropout, **switches):
    cfg = layers.LayerConfig(dropout, jnp.float32, remat=False, deterministic=False, **switches)
    return layers.DecoderLayer(num_heads=2, d_ff=32, layer_config=cfg)

  on = dict(fused_attention=True, fused_norm=True, fused_bias_grad=True)
  base = layer(0.0)
  params = base.init(jax.random.key(2), x, memory, memory_mask)
  assert (jax.tree.structure(jax.eval_shape(layer(0.0, **on).init, jax.random.key(2), x, memory,
                                            memory_mask)) == jax.tree.structure(params))

  def loss(m, p, key):
    out = m.apply(p, x, memory, memory_mask, rngs={"dropout": key})
    return jnp.sum(jnp.sin(out)), out

  def run(m):
    return jax.grad(lambda p: loss(m, p, jax.random.key(3)), has_aux=True)(params)

  dropped = layer(0.1, **on)
  (g_fused, out_fused), (g_base, out_base), a, b, c = jax.jit(lambda: (
      run(layer(0.0, **on)), run(base), loss(dropped, params, jax.random.key(4))[1],
      loss(dropped, params, jax.random.key(4))[1], loss(dropped, params, jax.random.key(5))[1]))()
  np.testing.assert_allclose(out_fused, out_base, atol=2e-5)
  assert _max_diff(g_fused, g_base) < 5e-5
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and np.all(np.isfinite(c))


def test_switches_are_config_fields_off_by_default_and_for_old_configs():
  config = model_config("xxact", "tiny")
  assert not (config.fused_attention or config.fused_norm or config.fused_bias_grad)
  for name in ("fused_attention", "fused_norm", "fused_bias_grad"):
    del config[name]
  config = stored_config.upgrade(config, "model.")
  layer_config = layers.LayerConfig.from_model_config(config, train=True)
  assert not (layer_config.fused_attention or layer_config.fused_norm
              or layer_config.fused_bias_grad)


def test_the_kernels_lower_to_triton_at_the_paper_size():
  """The GPU lowering (Pallas → Triton IR) of every kernel, forward and backward, for the
  paper-size step's shapes in bfloat16; built here without a GPU (compiled there)."""
  bf16 = jnp.bfloat16
  batch, xrd_len, comp_len, heads, dim = 4096, 18, 11, 12, 768
  shapes = dict(
      qkv=jax.ShapeDtypeStruct((batch, xrd_len, 3, heads, dim // heads), bf16),
      q=jax.ShapeDtypeStruct((batch, xrd_len, heads, dim // heads), bf16),
      kv=jax.ShapeDtypeStruct((batch, comp_len, 2, heads, dim // heads), bf16),
      mask=jax.ShapeDtypeStruct((batch, comp_len), jnp.bool_),
      x=jax.ShapeDtypeStruct((batch, xrd_len, dim), bf16),
      ffn=jax.ShapeDtypeStruct((batch * xrd_len, 2048), bf16),
      scale=jax.ShapeDtypeStruct((dim,), jnp.float32),
      seed=jax.ShapeDtypeStruct((2,), jnp.int32))

  def step(qkv, q, kv, mask, x, ffn, scale, seed):
    a = attention.self_attention(qkv, None, seed, 0.1, 16, interpret=False)
    c = attention.cross_attention(q, kv, mask, seed, 0.1, 16, interpret=False)
    y = norm.residual_layer_norm(x, x, scale, scale, seed, 0.1, 16, interpret=False)
    f32 = lambda v: jnp.sum(v.astype(jnp.float32))
    return f32(a) + f32(c) + f32(y) + f32(bias_kernel.column_sum(ffn, interpret=False))

  lowered = jax.jit(jax.grad(step, argnums=(0, 1, 2, 4, 6))).trace(*shapes.values()).lower(
      lowering_platforms=("cuda",))
  text = lowered.as_text()
  # Forward and backward of both attentions and of the norm, and the column sum.
  assert text.count("xla.gpu.triton") + text.count("triton_kernel_call") == 7
