"""Model zoo: output shapes, parameter counts at the paper's sizes, config and input errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax import stored_config
from xxact_jax import constants
from xxact_jax.models import build_model
from xxact_jax.models import check_inputs
from xxact_jax.models import layers
from xxact_jax.models import MODEL_NAMES
from xxact_jax.models import model_config
from xxact_jax.models import parameter_count
from xxact_jax.models import robust_l1
from xxact_jax.models import xrd_tokens
from xxact_jax.models.encoders import fractional_encoding
from xxact_jax.models.encoders import mat2vec_table
from float32_tolerance import assert_close

B, K = 3, 5


def random_batch(seed=0, batch=B, max_elements=K):
  """Compositions of 1..K distinct elements (descending fractions) and non-negative patterns."""
  rng = np.random.default_rng(seed)
  species = np.zeros((batch, max_elements), np.int32)
  fractions = np.zeros((batch, max_elements), np.float32)
  for i in range(batch):
    n = rng.integers(1, max_elements + 1)
    species[i, :n] = rng.choice(np.arange(1, 90), n, replace=False)
    f = np.sort(rng.random(n))[::-1] + 0.05
    fractions[i, :n] = f / f.sum()
  xrd = (rng.random((batch, constants.NUM_XRD_POINTS)) ** 8 * 100).astype(np.float32)
  return species, fractions, xrd


def tiny(name, **overrides):
  c = model_config(name, "tiny")
  c.dtype = "float32"
  for key, value in overrides.items():
    c[key] = value
  return c


def init_and_train_step(name):
  """(config, variables, jitted train-mode apply) of a tiny model predicting every target."""
  multimodal = name == "xxact"
  token_model = name in ("xxact", "xrd_transformer")
  cfg = tiny(name, targets=constants.ALL_TARGETS, mxm=token_model, contrastive=multimodal)
  model = build_model(cfg)
  # rbg keys keep the compiled programs small (threefry expands into many ops on CPU).
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *random_batch())
  train_apply = jax.jit(lambda v, s, f, x, key: model.apply(
      v, s, f, x, train=True, rngs={"dropout": key}))
  return cfg, variables, train_apply


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_parameters_and_dropout(name):
  cfg, variables, train_apply = init_and_train_step(name)
  multimodal = name == "xxact"
  token_model = name in ("xxact", "xrd_transformer")
  out = train_apply(variables, *random_batch(), jax.random.key(1, impl="rbg"))
  for target in constants.REGRESSION_TARGETS:
    assert out[target].shape == (B,) and out[target].dtype == jnp.float32
  for target, classes in constants.CLASSIFICATION_TARGETS.items():
    assert out[target].shape == (B, classes) and out[target].dtype == jnp.float32
  assert out["embedding"].ndim == 2 and out["embedding"].shape[0] == B
  assert ("mxm" in out) == token_model
  if token_model:
    assert out["mxm"].shape == (B, constants.XRD_NUM_TOKENS, constants.XRD_TOKEN_SIZE)
    assert bool(jnp.all(out["mxm"] >= 0))  # ReLU reconstruction
  if multimodal:
    assert out["comp_cls"].shape == out["xrd_cls"].shape == (B, cfg.fusion.d_model)
    np.testing.assert_allclose(out["logit_scale"], np.log(1 / 0.07), rtol=1e-6)
  else:
    assert "comp_cls" not in out and "logit_scale" not in out
  if name == "crabnet":
    for target in constants.REGRESSION_TARGETS:
      assert out[target + "_log_std"].shape == (B,)
  expected = {"xxact": {"composition_encoder", "xrd_encoder", "fusion", "heads"},
              "crabnet": {"composition_encoder", "heads"},
              "xrd_transformer": {"xrd_encoder", "heads"},
              "pxrd_fcn": {"xrd_encoder", "heads"},
              "pxrd_fcn_mlp": {"composition_encoder", "xrd_encoder", "fusion", "heads"}}[name]
  assert set(variables["params"]) == expected
  assert set(variables["params"]["heads"]) >= set(constants.ALL_TARGETS)
  dtypes = {x.dtype for x in jax.tree.leaves(variables["params"])}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(out))
  # Dropout is on in train mode: another key gives another output, the same key the same one.
  again = train_apply(variables, *random_batch(), jax.random.key(1, impl="rbg"))
  other = train_apply(variables, *random_batch(), jax.random.key(2, impl="rbg"))
  np.testing.assert_array_equal(out["embedding"], again["embedding"])
  assert not np.allclose(out["embedding"], other["embedding"])


def counts(cfg):
  return parameter_count.parameter_counts(parameter_count.abstract_params(cfg))


def test_paper_parameter_counts_match_the_paper():
  xxact = counts(model_config("xxact"))
  assert abs(xxact["composition_encoder"] / 9.7e6 - 1) <= 0.03, xxact
  assert abs(xxact["xrd_encoder"] / 6.8e6 - 1) <= 0.03, xxact
  assert abs(xxact["fusion"] / 94.5e6 - 1) <= 0.03, xxact
  fcn_mlp_config = model_config("pxrd_fcn_mlp")
  fcn_mlp_config.targets = ("formation_energy_per_atom",)  # single-target, as in the appendix
  fcn_mlp = counts(fcn_mlp_config)
  assert abs(fcn_mlp["total"] / 1.814401e6 - 1) <= 0.10, fcn_mlp


def test_tiny_configs_are_small_and_paper_configs_are_not():
  for name in MODEL_NAMES:
    tiny_cfg, paper_cfg = model_config(name, "tiny"), model_config(name, "paper")
    assert tiny_cfg.composition.num_layers == tiny_cfg.xrd.num_layers == 1
    assert tiny_cfg.fusion.num_layers == 1 and 32 <= tiny_cfg.fusion.d_model <= 64
    tiny_count, paper_count = counts(tiny_cfg)["total"], counts(paper_cfg)["total"]
    assert tiny_count < 100_000 < paper_count, (name, tiny_count, paper_count)


def test_mat2vec_table_has_padding_row_and_real_vectors():
  table = mat2vec_table()
  assert table.shape == (constants.NUM_ELEMENTS + 1, 200)
  assert not table[0].any()
  assert np.all(np.abs(table[1:]).sum(axis=1) > 0)
  # Distinct elements have distinct vectors.
  assert len({row.tobytes() for row in table[1:]}) == constants.NUM_ELEMENTS


@pytest.mark.parametrize("log_scale", [False, True])
def test_fractional_encoding_equals_crabnet_table_lookup(log_scale):
  resolution, dim = 5000, 256
  i = np.arange(resolution, dtype=np.float64)[:, None]
  j = np.arange(dim, dtype=np.float64)[None, :]
  angle = i / np.power(50.0, 2 * j / dim)
  table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
  fractions = np.array([0.0, 1e-5, 2e-4, 0.0331, 0.25, 0.5, 0.7071, 1.0])
  x = fractions.copy()
  if log_scale:
    with np.errstate(divide="ignore"):
      x = np.minimum(0.0025 * np.log2(x) ** 2, 1.0)
  x = np.maximum(x, 1 / resolution)
  expected = table[np.round(x * resolution).astype(int) - 1]
  got = fractional_encoding(jnp.asarray(fractions, jnp.float32), dim, resolution, log_scale)
  np.testing.assert_allclose(np.asarray(got), expected, atol=2e-3)
  assert not np.allclose(expected[4], expected[5])  # different fractions, different codes


def test_xrd_tokens_split_the_pattern_in_order():
  xrd = np.arange(2 * constants.NUM_XRD_POINTS, dtype=np.float32).reshape(2, -1)
  tokens = np.asarray(xrd_tokens(xrd, 0.5))
  assert tokens.shape == (2, 17, 250)
  np.testing.assert_array_equal(tokens[1, 3], 0.5 * xrd[1, 750:1000])


def test_robust_l1_matches_formula_and_skips_missing_labels():
  prediction = jnp.array([1.0, 2.0, 0.5, 3.0])
  log_std = jnp.array([0.0, -1.0, 0.5, 2.0])
  target = jnp.array([1.5, 2.0, np.nan, 0.0])
  per_item = np.sqrt(2) * np.abs([0.5, 0.0, 3.0]) * np.exp(-np.array([0.0, -1.0, 2.0])) + np.array(
      [0.0, -1.0, 2.0])
  np.testing.assert_allclose(robust_l1(prediction, log_std, target), per_item.mean(), rtol=1e-6)


def test_remat_gives_the_same_outputs_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  mask = jnp.array([[True] * 6, [True] * 3 + [False] * 3])
  stacks = [layers.TransformerEncoder(2, 2, 32, layers.LayerConfig(0.1, jnp.float32, remat, False))
            for remat in (False, True)]
  params = jax.jit(stacks[0].init)(jax.random.key(1, impl="rbg"), x, mask)

  def loss(stack, p):
    y = stack.apply(p, x, mask, rngs={"dropout": jax.random.key(2, impl="rbg")})
    return jnp.sum(y * jnp.arange(16.0))

  value_plain, grad_plain = jax.jit(jax.value_and_grad(lambda p: loss(stacks[0], p)))(params)
  value_remat, grad_remat = jax.jit(jax.value_and_grad(lambda p: loss(stacks[1], p)))(params)
  assert_close(value_plain, value_remat)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3),
               grad_plain, grad_remat)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad_plain)) > 0


def test_eval_mode_is_deterministic_for_every_layer_kind():
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  stack = layers.TransformerEncoder(1, 2, 32, layers.LayerConfig(0.5, jnp.float32, False, True))
  params = stack.init(jax.random.key(1), x, None)
  np.testing.assert_array_equal(
      stack.apply(params, x, None, rngs={"dropout": jax.random.key(2)}),
      stack.apply(params, x, None, rngs={"dropout": jax.random.key(3)}))


class TestBadInput:

  @pytest.fixture(scope="class")
  def xxact(self):
    model = build_model(tiny("xxact"))
    # Abstract parameters suffice: every check fires before the first array op.
    variables = jax.eval_shape(model.init, jax.random.key(0), *random_batch())
    return model, variables

  @pytest.mark.parametrize("bad_z", [119, -1, 500])
  def test_atomic_number_outside_the_table(self, xxact, bad_z):
    model, variables = xxact
    species, fractions, xrd = random_batch()
    species[1, 0] = bad_z
    message = rf"atomic number {bad_z} at \[1, 0\].*0 \(padding\) to 118"
    with pytest.raises(ValueError, match=message):
      model.apply(variables, species, fractions, xrd)

  def test_atomic_number_outside_the_table_for_crabnet(self):
    species, fractions, xrd = random_batch()
    species[2, 1] = 120
    with pytest.raises(ValueError, match="atomic number 120"):
      build_model(tiny("crabnet")).init(jax.random.key(0), species, fractions, xrd)

  def test_atomic_numbers_of_a_numpy_batch(self):
    species, fractions, xrd = random_batch()
    check_inputs(species, fractions, xrd)  # a good batch passes
    species[0, 2] = 121
    with pytest.raises(ValueError, match="atomic number 121 at \\[0, 2\\]"):
      check_inputs(species, fractions, xrd)

  @pytest.mark.parametrize("change, message", [
      (lambda s, f, x: (s, f[:, :-1], x), "species and fractions must have the same shape"),
      (lambda s, f, x: (s, f, x[:, :4000]), r"xrd must have shape \[batch, 4250\]"),
      (lambda s, f, x: (s, f, x[:2]), "disagree on the batch size"),
      (lambda s, f, x: (s[:, 0], f[:, 0], x), r"species must have shape \[batch, max_elements\]"),
  ])
  def test_shapes_that_disagree(self, xxact, change, message):
    model, variables = xxact
    species, fractions, xrd = change(*random_batch())
    with pytest.raises(ValueError, match=message) as error:
      model.apply(variables, species, fractions, xrd)
    assert "species" in str(error.value) and "xrd" in str(error.value)  # names every array

  def test_bad_mask_shape(self, xxact):
    model, variables = xxact
    species, fractions, xrd = random_batch()
    with pytest.raises(ValueError, match=r"xrd_mask must have shape \[batch, 17\]"):
      model.apply(variables, species, fractions, xrd, xrd_mask=np.zeros((B, 16), bool))

  def test_shape_errors_also_raise_under_jit(self, xxact):
    model, variables = xxact
    species, fractions, xrd = random_batch()
    with pytest.raises(ValueError, match="disagree on the batch size"):
      jax.jit(model.apply).lower(variables, species, fractions, xrd[:1])

  def test_unknown_names(self):
    with pytest.raises(ValueError, match="Unknown model.name 'crab'"):
      model_config("crab")
    with pytest.raises(ValueError, match="Unknown model size"):
      model_config("xxact", "huge")
    with pytest.raises(ValueError, match="Unknown target 'density'"):
      build_model(tiny("xxact", targets=("density",)))
    species, fractions, xrd = random_batch()
    with pytest.raises(ValueError, match="model_config.dtype must be one of"):
      build_model(tiny("xxact", dtype="int8")).init(jax.random.key(0), species, fractions, xrd)
    with pytest.raises(ValueError, match="no XRD input"):
      build_model(tiny("crabnet", mxm=True)).init(jax.random.key(0), species, fractions, xrd)


def test_remat_traces_for_every_model():
  """Every model differentiates with remat on (traced only; nothing is compiled)."""
  for name in MODEL_NAMES:
    model = build_model(tiny(name, remat=True))
    inputs = random_batch()
    params = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
    loss = lambda p: model.apply({"params": p}, *inputs, train=True,
                                 rngs={"dropout": jax.random.key(1)})["embedding"].sum()
    grads = jax.eval_shape(jax.grad(loss), params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_importing_models_does_not_import_pymatgen():
  code = "import sys, xxact_jax.models; sys.exit('pymatgen' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], timeout=300).returncode == 0


def test_readout_with_the_composition_cls():
  """readout="fused_and_composition_cls": the heads read both [CLS] vectors, so the
  composition reaches them without passing through cross-attention."""
  species, fractions, xrd = random_batch()
  cfg = tiny("xxact", targets=("formation_energy_per_atom",),
             readout="fused_and_composition_cls")
  model = build_model(cfg)
  params = model.init(jax.random.key(0), species, fractions, xrd)["params"]
  kernel = params["heads"]["formation_energy_per_atom"]["kernel"]
  assert kernel.shape[0] == 2 * cfg.fusion.d_model
  out = model.apply({"params": params}, species, fractions, xrd)
  # Zeroing the fused half of the head leaves a prediction that still varies with composition.
  params["heads"]["formation_energy_per_atom"]["kernel"] = kernel.at[:cfg.fusion.d_model].set(0)
  a = model.apply({"params": params}, species, fractions, xrd)["formation_energy_per_atom"]
  assert np.ptp(np.asarray(a)) > 0 and out["formation_energy_per_atom"].shape == (B,)
  mlp = build_model(tiny("xxact", targets=("formation_energy_per_atom",), head_hidden=(16, 8)))
  mlp_params = mlp.init(jax.random.key(0), species, fractions, xrd)["params"]["heads"]
  assert mlp_params["formation_energy_per_atom_hidden0"]["kernel"].shape[-1] == 16
  assert mlp_params["formation_energy_per_atom"]["kernel"].shape[0] == 8
  with pytest.raises(ValueError, match="Unknown model.readout"):
    build_model(tiny("xxact", readout="mean")).init(jax.random.key(0), species, fractions, xrd)



def test_conv_stem_tokens_and_shift_by_one_token():
  """model.xrd_stem=conv: [B, 17, d] tokens from strided convolutions; masking still per token;
  a pattern moved by one token (250 points) moves the stem's tokens by exactly one position (the
  strides multiply to the token size), which a per-position patch projection does not."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from xxact_jax.models import encoders  # pylint: disable=g-import-not-at-top
  cfg = tiny("xrd_transformer", targets=("crystal_system",), mxm=True, xrd_stem="conv")
  model = build_model(cfg)
  species, fractions, xrd = random_batch()
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), species, fractions, xrd)
  params = variables["params"]["xrd_encoder"]
  assert "input_projection" not in params and "stem_output" in params
  mask = np.zeros((B, constants.XRD_NUM_TOKENS), bool)
  mask[:, 3] = True
  out = model.apply(variables, species, fractions, xrd, xrd_mask=jnp.asarray(mask))
  assert out["crystal_system"].shape == (B, 7)
  assert out["mxm"].shape == (B, constants.XRD_NUM_TOKENS, constants.XRD_TOKEN_SIZE)
  assert np.isfinite(np.asarray(out["mxm"])).all()

  class Stem(nn.Module):
    @nn.compact
    def __call__(self, x):
      return encoders.conv_stem(x.reshape(x.shape[0], constants.XRD_NUM_TOKENS, -1), 8,
                                jnp.float32)

  pattern = np.zeros((1, constants.NUM_XRD_POINTS), np.float32)
  pattern[0, 1800:1830] = np.hanning(30)            # one peak in token 7
  moved = np.roll(pattern, constants.XRD_TOKEN_SIZE, axis=1)
  stem_vars = Stem().init(jax.random.key(1), pattern)
  a, b = (np.asarray(Stem().apply(stem_vars, x))[0] for x in (pattern, moved))
  assert_close(b[8], a[7])
  assert not np.allclose(a[8], a[7])
  with pytest.raises(ValueError, match="xrd_stem"):
    bad = tiny("xrd_transformer", targets=("crystal_system",), xrd_stem="fourier")
    build_model(bad).init(jax.random.key(0, impl="rbg"), species, fractions, xrd)


@pytest.mark.parametrize("activation, alive", [("relu", False), ("softplus", True),
                                               ("linear", True)])
def test_mxm_head_keeps_a_gradient_unless_relu_has_died(activation, alive):
  """The failure mode that made MXM pretraining stall: once every pre-activation of the ReLU
  head is negative (targets of masked tokens are mostly ~0), its gradient is exactly zero."""
  from xxact_jax.models import heads  # pylint: disable=g-import-not-at-top
  head = heads.Heads((), True, False, layers.LayerConfig(dropout=0.0, dtype=jnp.float32,
                                                        remat=False, deterministic=True),
                     mxm_activation=activation)
  tokens = jax.random.normal(jax.random.key(0), (4, constants.XRD_NUM_TOKENS, 8))
  params = head.init(jax.random.key(1), jnp.zeros((4, 8)), tokens)["params"]
  params["mxm"]["bias"] = jnp.full_like(params["mxm"]["bias"], -50.0)   # every unit below 0
  target = jnp.full((4, constants.XRD_NUM_TOKENS, constants.XRD_TOKEN_SIZE), 0.01)

  def loss(p):
    return jnp.mean((head.apply({"params": p}, jnp.zeros((4, 8)), tokens)["mxm"] - target) ** 2)

  grad = jax.grad(loss)(params)["mxm"]["kernel"]
  assert (float(jnp.abs(grad).max()) > 0) == alive


def test_stored_configs_without_mxm_activation_keep_relu():
  stored = model_config("xxact", "tiny").to_dict()
  del stored["mxm_activation"]
  stored["mxm"] = True
  assert stored_config.upgrade(dict(stored), "model.")["mxm_activation"] == "relu"
  stored["mxm"] = False   # no MXM head: the activation is moot, so today's default
  assert stored_config.upgrade(dict(stored), "model.")["mxm_activation"] == "softplus"
  assert model_config("xxact", "tiny").mxm_activation == "softplus"
