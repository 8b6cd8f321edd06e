"""Objectives, schedule and config parsing (no dataset, no model)."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from xxact_jax import stored_config
from xxact_jax import constants
from xxact_jax.training import defaults, objectives, optimizer


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.mark.parametrize("name,epochs", [("supervised", 50), ("mxm_contrastive", 100)])
def test_config_files_state_the_papers_recipe(name, epochs):
  c = defaults.load_config_file(os.path.join(CONFIGS, f"{name}.py"))
  assert c.num_epochs == epochs and c.global_batch_size == 32_768 and c.model.dropout == 0.1
  assert (c.optimizer.b1, c.optimizer.b2, c.optimizer.weight_decay) == (0.9, 0.98, 0.01)
  with pytest.raises(ValueError, match="missing \\['end_lr'\\]"):
    recipe = dict(num_epochs=1, global_batch_size=8, dropout=0.0,
                  optimizer=dict(init_lr=0, peak_lr=1, warmup_fraction=0.1, b1=0.9, b2=0.9,
                                 weight_decay=0.0, grad_clip_norm=0.0))
    defaults.experiment("xxact", "supervised", None, recipe=recipe)


def test_schedule_hits_paper_values():
  c = defaults.load_config_file(os.path.join(CONFIGS, "supervised.py")).optimizer
  total = 1000
  lr = optimizer.learning_rate_schedule(c, total)
  assert float(lr(0)) == pytest.approx(1e-6, rel=1e-4)
  assert float(lr(100)) == pytest.approx(5e-4, rel=1e-4)          # peak at 10 % of training
  assert float(lr(50)) == pytest.approx((1e-6 + 5e-4) / 2, rel=1e-3)   # linear warmup
  assert float(lr(total)) == pytest.approx(1e-7, rel=1e-3)
  assert float(lr(550)) < float(lr(300)) < float(lr(100))   # cosine decay is monotone


def test_parse_arg():
  a = defaults.parse_arg("runlocal,targets=band_gap", runlocal=False, targets="paper")
  assert a.runlocal is True and a.targets == "band_gap"
  with pytest.raises(ValueError, match="Unknown config argument 'bogus'"):
    defaults.parse_arg("bogus=1", runlocal=False)


def test_mxm_mask_at_least_one_token_per_sample():
  m = np.asarray(objectives.sample_xrd_mask(jax.random.key(0), 512, 17, 0.05))
  assert m.shape == (512, 17)
  assert (m.sum(1) == 1).all()                 # round(0.05 * 17) = 1
  assert len(np.unique(np.argmax(m, 1))) == 17  # every position gets masked somewhere
  m = np.asarray(objectives.sample_xrd_mask(jax.random.key(1), 8, 17, 0.3))
  assert (m.sum(1) == 5).all()


def test_mxm_loss_counts_masked_tokens_only():
  xrd = jnp.arange(2 * 4250, dtype=jnp.float32).reshape(2, 4250) % 100
  recon = xrd.reshape(2, 17, 250)
  mask = jnp.zeros((2, 17), bool).at[:, 3].set(True)
  # Wrong everywhere except the masked token: loss 0.
  wrong = jnp.where(mask[..., None], recon, recon + 7.0)
  assert float(objectives.mxm_loss(wrong, xrd, mask)) == pytest.approx(0.0)
  # Wrong by 2 on the masked token only: per-sample MSE 4.
  off = jnp.where(mask[..., None], recon + 2.0, recon)
  assert float(objectives.mxm_loss(off, xrd, mask)) == pytest.approx(4.0)
  assert float(objectives.mxm_loss(off * 0.5, xrd, mask, xrd_scale=0.5)) == pytest.approx(1.0)
  # With sqrt intensities the target is sqrt(intensity × scale): an exact sqrt reconstruction of
  # the masked token scores 0, the linear one does not.
  sqrt_recon = jnp.sqrt(recon * 0.01)
  assert float(objectives.mxm_loss(sqrt_recon, xrd, mask, 0.01, "sqrt")) == pytest.approx(0.0)
  assert float(objectives.mxm_loss(recon * 0.01, xrd, mask, 0.01, "sqrt")) > 0.01


def test_sqrt_xrd_input_compresses_intensities_and_keeps_the_unmeasured_marker():
  from xxact_jax import constants
  from xxact_jax.models import encoders
  x = jnp.array([[0.0, 1.0, 25.0, 100.0, constants.UNMEASURED_INTENSITY]])
  np.testing.assert_allclose(encoders.xrd_input(x, 0.01, "sqrt"), [[0, 0.1, 0.5, 1, -1]],
                             rtol=1e-6)
  np.testing.assert_allclose(encoders.xrd_input(x, 0.01, "linear"),
                             [[0, 0.01, 0.25, 1, -1]], rtol=1e-6)
  with pytest.raises(ValueError, match="xrd_intensity"):
    encoders.xrd_input(x, 0.01, "log")


def test_stored_model_configs_without_newer_fields_are_upgraded():
  from xxact_jax.training import defaults
  c = defaults.load_config_file(os.path.join(CONFIGS, "supervised.py"), "runlocal")
  stored = defaults.model_of(c).to_dict()     # what a checkpoint stores
  for key in ("dropout_bits", "readout", "head_hidden", "xrd_intensity", "xrd_stem",
              "regression_log_std"):
    stored.pop(key)
  upgraded = ml_collections.ConfigDict(stored_config.upgrade(stored, "model."))
  assert upgraded.dropout_bits == 32 and upgraded.xrd_intensity == "linear"
  assert upgraded.xrd_stem == "patch"
  assert upgraded.readout == "fused_cls" and tuple(upgraded.head_hidden) == ()
  c.model.xrd_intensity = "cube"
  with pytest.raises(ValueError, match="xrd_intensity"):
    defaults.model_of(c)


def test_uniform_task_sampling_uses_one_labelled_task_per_example():
  b = 4000
  rng = np.random.default_rng(0)
  batch = {"formation_energy_per_atom": rng.normal(size=b).astype(np.float32),
           "crystal_system": rng.integers(0, 7, b).astype(np.int32)}
  batch["formation_energy_per_atom"][:1000] = np.nan       # only crystal system labelled
  batch["crystal_system"][1000:2000] = -1                  # only formation energy labelled
  stats = {"formation_energy_per_atom": {"mean": 0.0, "std": 1.0}}
  # Outputs that make formation-energy loss exactly 1 and crystal-system loss exactly log 7.
  outputs = {"formation_energy_per_atom": jnp.nan_to_num(jnp.asarray(
                 batch["formation_energy_per_atom"])) + 1.0,
             "crystal_system": jnp.zeros((b, 7))}
  targets = ("formation_energy_per_atom", "crystal_system")
  loss, metrics = objectives.supervised_loss(outputs, batch, targets, stats, jax.random.key(0))
  # 1000 forced CE, 1000 forced MSE, 2000 split ~evenly: expected mean ≈ (1 + log 7) / 2.
  assert float(loss) == pytest.approx((1.0 + np.log(7)) / 2, rel=0.03)
  assert float(metrics["loss/formation_energy_per_atom"]) == pytest.approx(1.0)
  assert float(metrics["loss/crystal_system"]) == pytest.approx(np.log(7), rel=1e-5)
  all_loss, _ = objectives.supervised_loss(outputs, batch, targets, stats, jax.random.key(0),
                                           task_sampling="all")
  assert float(all_loss) == pytest.approx(1.0 + np.log(7), rel=1e-5)


def test_missing_labels_never_contribute():
  batch = {"band_gap": np.array([np.nan, np.nan], np.float32)}
  outputs = {"band_gap": jnp.array([5.0, -3.0])}
  loss, _ = objectives.supervised_loss(outputs, batch, ("band_gap",),
                                       {"band_gap": {"mean": 0.0, "std": 1.0}}, jax.random.key(0))
  assert float(loss) == 0.0


def test_contrastive_loss_is_low_for_aligned_pairs_and_ignores_padding():
  rng = np.random.default_rng(0)
  e = rng.normal(size=(16, 8)).astype(np.float32)
  aligned, m = objectives.contrastive_loss(e, e, jnp.log(1 / 0.07))
  shuffled, _ = objectives.contrastive_loss(e, e[::-1], jnp.log(1 / 0.07))
  assert float(m["retrieval_accuracy"]) == 1.0
  assert float(aligned) < float(shuffled)
  valid = np.array([True] * 10 + [False] * 6)
  garbage = e.copy()
  garbage[10:] = rng.normal(size=(6, 8))
  padded, _ = objectives.contrastive_loss(e, garbage, jnp.log(1 / 0.07), valid=valid)
  small, _ = objectives.contrastive_loss(e[:10], e[:10], jnp.log(1 / 0.07))
  assert float(padded) == pytest.approx(float(small), rel=1e-5)


def test_trainable_mask_freezes_all_but_heads():
  params = {"composition_encoder": {"w": 1.0}, "fusion": {"w": 2.0}, "heads": {"band_gap": 3.0}}
  mask = optimizer.trainable_mask(params, "heads")
  assert mask == {"composition_encoder": {"w": False}, "fusion": {"w": False},
                  "heads": {"band_gap": True}}
  with pytest.raises(ValueError, match="not among the model's parameter collections"):
    optimizer.trainable_mask(params, "decoder")


def test_robust_l1_regression_loss():
  batch = {"band_gap": np.array([1.0, 3.0, np.nan], np.float32)}
  outputs = {"band_gap": jnp.array([1.0, 1.0, 0.0]), "band_gap_log_std": jnp.zeros(3)}
  stats = {"band_gap": {"mean": 0.0, "std": 1.0}}
  losses = objectives.per_example_losses(outputs, batch, ("band_gap",), stats, "robust_l1")
  np.testing.assert_allclose(np.asarray(losses[:, 0]), [0.0, 2 * np.sqrt(2), 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="band_gap_log_std"):
    objectives.per_example_losses({"band_gap": outputs["band_gap"]}, batch, ("band_gap",), stats,
                                  "robust_l1")


def test_l1_regression_loss():
  batch = {"band_gap": np.array([1.0, 3.0, np.nan], np.float32)}
  outputs = {"band_gap": jnp.array([1.5, 1.0, 0.0])}
  stats = {"band_gap": {"mean": 1.0, "std": 2.0}}
  losses = objectives.per_example_losses(outputs, batch, ("band_gap",), stats, "l1")
  # Standardised: targets 0 and 1, predictions 1.5 and 1.0.
  np.testing.assert_allclose(np.asarray(losses[:, 0]), [1.5, 0.0, 0.0], rtol=1e-6)
  with pytest.raises(ValueError, match="Unknown regression_loss"):
    objectives.per_example_losses(outputs, batch, ("band_gap",), stats, "huber")


def test_size_and_loss_config_arguments():
  configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  small = defaults.load_config_file(os.path.join(configs, "supervised.py"),
                                    "size=small,loss=robust_l1")
  paper = defaults.load_config_file(os.path.join(configs, "supervised.py"))
  assert small.model.fusion.d_model < paper.model.fusion.d_model
  assert small.model.fusion.num_layers < paper.model.fusion.num_layers
  assert small.regression_loss == "robust_l1" and defaults.model_of(small).regression_log_std
  assert paper.regression_loss == "mse" and not defaults.model_of(paper).regression_log_std
  crabnet = defaults.load_config_file(os.path.join(configs, "crabnet.py"), "runlocal")
  assert crabnet.regression_loss == "robust_l1"
  crabnet_mse = defaults.load_config_file(os.path.join(configs, "crabnet.py"), "runlocal,loss=mse")
  assert crabnet_mse.regression_loss == "mse"
  with pytest.raises(ValueError, match="Unknown loss"):
    defaults.load_config_file(os.path.join(configs, "supervised.py"), "loss=huber")
  with pytest.raises(ValueError, match="Unknown model size"):
    defaults.load_config_file(os.path.join(configs, "supervised.py"), "size=huge")


def test_log_std_heads_feed_robust_l1():
  """A bimodal model with regression_log_std trains a step under robust_l1."""
  from xxact_jax.models import build_model, model_config  # pylint: disable=g-import-not-at-top
  cfg = model_config("xxact", size="tiny")
  cfg.targets = ("formation_energy_per_atom", "crystal_system")
  cfg.regression_log_std = True
  cfg.dtype = "float32"
  model = build_model(cfg)
  species = jnp.array([[14, 8, 0]], jnp.int32)
  fractions = jnp.array([[1 / 3, 2 / 3, 0.0]], jnp.float32)
  xrd = jnp.zeros((1, constants.NUM_XRD_POINTS), jnp.float32).at[:, 100].set(100.0)
  params = model.init(jax.random.key(0), species, fractions, xrd, train=False)["params"]
  assert "formation_energy_per_atom_log_std" in params["heads"]
  outputs = model.apply({"params": params}, species, fractions, xrd, train=False)
  assert outputs["formation_energy_per_atom_log_std"].shape == (1,)
  batch = {"formation_energy_per_atom": jnp.array([-1.0]), "crystal_system": jnp.array([6])}
  stats = {"formation_energy_per_atom": {"mean": 0.0, "std": 1.0}}
  losses = objectives.per_example_losses(outputs, batch, cfg.targets, stats, "robust_l1")
  assert losses.shape == (1, 2) and np.isfinite(np.asarray(losses)).all()


def test_load_config_file(tmp_path):
  configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  c = defaults.load_config_file(os.path.join(configs, "supervised.py"), "runlocal,targets=band_gap")
  assert tuple(c.targets) == ("band_gap",) and c.global_batch_size == 64
  with pytest.raises(FileNotFoundError, match="nope.py"):
    defaults.load_config_file(str(tmp_path / "nope.py"))


def test_a_stored_config_without_newer_fields_resumes_and_a_changed_fraction_does_not(tmp_path):
  from xxact_jax.training import train  # pylint: disable=g-import-not-at-top
  config = defaults.load_config_file(os.path.join(CONFIGS, "supervised.py"), "runlocal")
  model = defaults.model_of(config)
  stored = train.ckpt_lib.config_to_json(config, model)
  for key in ("train_fraction", "fraction_seed", "extra_train"):
    del stored["data"][key]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  train.check_workdir(config, model, str(tmp_path))     # same run: resumes
  config.data.train_fraction = 0.5
  with pytest.raises(ValueError, match="data.train_fraction: 1.0 there, 0.5 now"):
    train.check_workdir(config, model, str(tmp_path))


def test_stop_signals_on_one_process_ignore_the_preemption_service():
  """Without jax.distributed the sync point is False and both signals stay with the trainer."""
  import signal  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import train  # pylint: disable=g-import-not-at-top
  assert multihost_utils.reached_preemption_sync_point(3) is False
  with train.StopSignals() as stop:
    assert not stop.preemption_service
    assert signal.getsignal(signal.SIGTERM) == stop._handle
    assert stop.agreed(3, 10) is None
    stop._handle(signal.SIGINT, None)
    assert stop.agreed(4, 10) == signal.SIGINT
  assert signal.getsignal(signal.SIGTERM) != stop._handle


def test_stop_signals_stop_every_process_at_the_preemption_sync_point(monkeypatch):
  """With several processes the preemption service owns SIGTERM and picks the stop step."""
  import signal  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import train  # pylint: disable=g-import-not-at-top
  asked = []

  def reached(step):
    asked.append(step)
    return step == 7

  monkeypatch.setattr(train.jax, "process_count", lambda: 2)
  monkeypatch.setattr(train.multihost_utils, "reached_preemption_sync_point", reached)
  before = signal.getsignal(signal.SIGTERM)
  with train.StopSignals() as stop:
    assert stop.preemption_service
    assert signal.getsignal(signal.SIGTERM) == before     # left to the service
    assert signal.getsignal(signal.SIGINT) == stop._handle
    assert [stop.agreed(s, 10) for s in (5, 6, 7)] == [None, None, signal.SIGTERM]
  assert asked == [5, 6, 7]

  def disabled(step):
    raise RuntimeError("Preemption sync manager has not been initialized")

  monkeypatch.setattr(train.multihost_utils, "reached_preemption_sync_point", disabled)
  assert train.StopSignals().agreed(7, 10) is None
