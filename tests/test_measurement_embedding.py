"""model.xrd_measurement_embedding: the XRD encoder told whether a pattern is measured or simulated,
by the augmentation in training and by the entry points at predict time."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xxact_jax.data import augment
from xxact_jax.inference.model import Model
from xxact_jax.inference.predictor import Predictor
from xxact_jax.models import build_model
from xxact_jax.models import model_config
from xxact_jax import stored_config

from float32_tolerance import assert_close
from test_augment import si_pattern
from test_augment import silicon_training
from test_models import random_batch


def tiny(name, embedding):
  c = model_config(name, "tiny")
  c.dtype = "float32"
  c.targets = ("crystal_system",)
  c.xrd_measurement_embedding = embedding
  return c


def init(cfg):
  model = build_model(cfg)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *random_batch())["params"]
  # Distinct source vectors, so the two sources must give different outputs.
  if cfg.xrd_measurement_embedding:
    table = params["xrd_encoder"]["measurement_embedding"]
    params["xrd_encoder"]["measurement_embedding"] = table.at[1].set(table[1] + 1.0)
  return model, params


def test_augmentation_flags_the_patterns_it_changed():
  x = jnp.tile(si_pattern(), (64, 1))
  config = augment.default_config(enabled=True)
  key = jax.random.key(3)
  y, flags = jax.jit(lambda k, v: augment.augment_xrd_with_flags(k, v, config))(key, x)
  changed = np.abs(np.asarray(y) - np.asarray(x)).max(axis=-1) > 1e-3
  np.testing.assert_array_equal(np.asarray(flags), changed)
  assert 0 < changed.sum() < 64          # apply_prob = 0.8 of 64 patterns
  # The same draws as augment_xrd: the flags do not change the augmented batch.
  np.testing.assert_allclose(y, augment.augment_xrd(key, x, config), atol=1e-3)
  y_off, flags_off = augment.augment_xrd_with_flags(key, x, augment.default_config())
  assert y_off is x and not np.asarray(flags_off).any()


@pytest.mark.parametrize("name", ["xxact", "xrd_transformer"])
def test_the_source_changes_the_output_only_with_the_embedding(name):
  species, fractions, xrd = random_batch()
  for embedding in (True, False):
    model, params = init(tiny(name, embedding))
    run = jax.jit(lambda p, m: model.apply({"params": p}, species, fractions, xrd,
                                           measured=m)["crystal_system"])
    simulated = run(params, jnp.zeros(3, bool))
    measured = run(params, jnp.ones(3, bool))
    mixed = run(params, jnp.array([True, False, True]))
    # Op by op against jitted: the float32 tolerance (tests/float32_tolerance.py).
    assert_close(model.apply({"params": params}, species, fractions, xrd)["crystal_system"],
                 simulated)
    if embedding:
      assert not np.allclose(simulated, measured, atol=1e-4)
      # Per pattern: each row reads its own source.
      assert_close(mixed[0], measured[0])
      assert_close(mixed[1], simulated[1])
    else:
      assert_close(simulated, measured)
      assert "measurement_embedding" not in params["xrd_encoder"]


def test_fcn_refuses_the_embedding_and_old_configs_read_without_it():
  cfg = tiny("pxrd_fcn", True)
  with pytest.raises(ValueError, match="xrd_measurement_embedding"):
    build_model(cfg).init(jax.random.key(0), *random_batch())
  stored = dict(tiny("xxact", False).to_dict())
  del stored["xrd_measurement_embedding"]
  assert stored_config.upgrade(stored, "model.")["xrd_measurement_embedding"] is False


def test_the_train_step_tells_the_model_which_patterns_were_augmented():
  """Only the augmented patterns reach the "measured" row of the table: with augmentation off
  its gradient is zero, with it on it is not."""
  from xxact_jax.training import defaults  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  config = defaults.load_config_file("configs/measured.py", "runlocal,targets=crystal_system")
  config.model.xrd_measurement_embedding = True
  config.augment.apply_prob = 0.5
  model, tx, schedule, state, batch = silicon_training(config, 8)
  moved = {}
  for enabled in (True, False):
    config.augment.enabled = enabled
    train_step = jax.jit(step_lib.make_train_step(model, tx, schedule, config, {}))
    new_state, _ = train_step(state, batch)
    before = state["params"]["xrd_encoder"]["measurement_embedding"]
    after = new_state["params"]["xrd_encoder"]["measurement_embedding"]
    moved[enabled] = np.abs(np.asarray(after - before)).max(axis=-1)
  assert moved[True][1] > 0 and moved[True][0] > 0   # 8 patterns at apply_prob 0.5: both kinds
  # Without augmentation every pattern is simulated: AdamW's decay is all that moves row 1.
  assert moved[False][0] > 10 * moved[False][1]


def test_the_predictor_reads_scans_as_measured_and_cifs_as_simulated(fixtures_dir):
  cfg = tiny("xxact", True)
  _, params = init(cfg)
  config = defaults_config(cfg)
  predictor = Predictor(Model(params, config, {}, max_elements=10, batch_size=4))
  scan = os.path.join(fixtures_dir, "patterns", "NaCl_CuKa.csv")
  cif = os.path.join(fixtures_dir, "patterns", "NaCl.cif")
  predictor.indexing = False         # the model's own answer, not a lattice's restriction
  arrays = predictor.prepare("NaCl", scan)
  as_measured = predictor.predict_arrays(*(a[None] for a in arrays), measured=True)
  as_simulated = predictor.predict_arrays(*(a[None] for a in arrays))
  probabilities = lambda out: np.array(list(out["crystal_system"]["probabilities"].values()))
  assert_close(probabilities(predictor.predict("NaCl", scan)), as_measured["crystal_system"][0])
  assert not np.allclose(as_measured["crystal_system"], as_simulated["crystal_system"], atol=1e-4)
  batch = predictor.predict_batch(["NaCl", "NaCl"], [scan, scan])
  assert_close(batch["crystal_system"][0], as_measured["crystal_system"][0])
  cif_arrays = predictor.read_cif(cif)["arrays"]
  assert_close(probabilities(predictor.predict(cif=cif)),
               predictor.predict_arrays(*(a[None] for a in cif_arrays))["crystal_system"][0])


def defaults_config(model_cfg):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict()
  config.model = model_cfg
  return config

