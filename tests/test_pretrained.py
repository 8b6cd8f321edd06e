"""The shipped model (inference/pretrained.py), its export (inference/export.py) and its compact
reference (inference/compact_reference.py).

Most tests export the session's trained `:runlocal` workdir into a temporary model folder and
load it from there. The tests marked "shipped" run on the model committed under
xxact_jax/pretrained/ and are skipped while the package holds none; its expected answers on
known inputs are in tests/fixtures/pretrained/expected.json (labels; the shipped model's own
answers once recorded: python tests/fixtures/pretrained/record_expected.py).
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from xxact_jax.inference import compact_reference
from xxact_jax.inference import export
from xxact_jax.inference import pretrained
from xxact_jax.inference import reference as reference_lib
from xxact_jax.inference.errors import InputError

from conftest import FIXTURES_DIR

PRETRAINED_FIXTURES = os.path.join(FIXTURES_DIR, "pretrained")
DEV_INDEX = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "data", "measured_xrd_dev", "index.csv")
SIZE_LIMIT_BYTES = 25_000_000


@pytest.fixture(scope="session")
def exported(workdir, embedded_dataset, tmp_path_factory):
  """The `:runlocal` workdir exported as a shipped model (64 test rows check the dtype)."""
  output = str(tmp_path_factory.mktemp("pretrained") / "xxact-test-v0")
  export.export([workdir], embedded_dataset, output, name="xxact-test", version="0",
                check_rows=64, command="tests/conftest.py workdir", log=lambda m: None)
  return output


@pytest.fixture
def use_model(monkeypatch):
  """Points the package at a model folder, as $XXACT_JAX_PRETRAINED does."""
  def use(path):
    monkeypatch.setenv(pretrained.ENVIRONMENT_VARIABLE, path)
  return use


def _copy(model_dir, tmp_path) -> str:
  copy = str(tmp_path / os.path.basename(model_dir))
  shutil.copytree(model_dir, copy)
  return copy


def _rewrite_manifest(model_dir, **changes):
  path = os.path.join(model_dir, pretrained.MANIFEST)
  with open(path) as f:
    manifest = json.load(f)
  manifest.update(changes)
  with open(path, "w") as f:
    json.dump(manifest, f)


# The export.

def test_export_writes_params_only_members_config_and_manifest(exported, workdir):
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  manifest = pretrained.read_manifest(exported)
  assert manifest["format"] == pretrained.FORMAT
  assert manifest["format_version"] == pretrained.FORMAT_VERSION
  assert (manifest["name"], manifest["version"]) == ("xxact-test", "0")
  assert len(manifest["members"]) == 1 and manifest["members"][0]["step"] > 0
  # Every file is listed with its sha256, and the listing is complete.
  assert manifest["files"] == pretrained.file_table(exported)
  assert manifest["bytes"] == sum(e["bytes"] for e in manifest["files"].values())
  # Parameters only: the same tree as the workdir's parameters, no optimiser state.
  restored = checkpoints.restore_checkpoint(workdir)
  params = pretrained.restore_params(os.path.join(exported, "members", "0", "params"))
  assert jax.tree.structure(params) == jax.tree.structure(restored.params)
  # The shipped config is the run's.
  with open(os.path.join(exported, "config.json")) as f:
    assert f.read() == open(os.path.join(exported, "members", "0", "config.json")).read()
  assert json.load(open(os.path.join(exported, "config.json"))) == checkpoints.config_to_json(
      restored.config)
  # The half-precision check and the loaded-back check are recorded.
  check = manifest["half_precision_check"]
  assert manifest["params_dtype"] in ("float16", "mixed", "float32")
  assert check["within_tolerance"]          # --dtype=auto: what is stored meets the tolerance
  assert (manifest["params_dtype"] == "float32") == (set(check["float32_collections"]) == set(
      restored.params))
  # On disk: float16 leaves outside the float32 collections, float32 inside them.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
  on_disk = checkpointer.restore(os.path.join(exported, "members", "0", "params"))
  checkpointer.close()
  for name, tree in on_disk.items():
    dtypes = {str(x.dtype) for x in jax.tree.leaves(tree) if "float" in str(x.dtype)}
    assert dtypes == {"float32" if name in check["float32_collections"] else "float16"}, name
  for changes in manifest["export_check"].values():
    assert changes["crystal_system"] < 1e-3 and changes["formation_energy_per_atom"] < 1e-3


def test_export_refuses_members_trained_differently(workdir, embedded_dataset, tmp_path,
                                                    monkeypatch):
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  original = checkpoints.restore_checkpoint

  def restore(path, checkpoint="best"):
    r = original(path, checkpoint)
    if os.path.abspath(path) != other:
      return r
    config = r.config.copy_and_resolve_references()
    config.num_train_steps += 1      # trained differently, not only with another seed
    return checkpoints.RestoredCheckpoint(r.params, config, r.target_stats, r.step, r.path,
                                          r.extra)
  monkeypatch.setattr(checkpoints, "restore_checkpoint", restore)
  with pytest.raises(InputError, match="num_train_steps"):
    export.export([workdir, other], embedded_dataset, str(tmp_path / "out"), log=lambda m: None)


def test_half_precision_tolerance():
  targets = ("formation_energy_per_atom", "crystal_system")
  assert export.within_tolerance({"formation_energy_per_atom": 9e-4, "crystal_system": 9e-4},
                                 targets)
  assert not export.within_tolerance({"formation_energy_per_atom": 1.1e-3,
                                      "crystal_system": 1e-5}, targets)
  assert not export.within_tolerance({"formation_energy_per_atom": 0.0,
                                      "crystal_system": 1e-3}, targets)


# Loading and predicting.

def test_load_without_workdir_uses_the_shipped_model(exported, workdir, embedded_dataset,
                                                     use_model):
  import xxact_jax  # pylint: disable=g-import-not-at-top
  use_model(exported)
  for predictor in (xxact_jax.load(), xxact_jax.load("pretrained"), xxact_jax.load(None),
                    xxact_jax.load(exported)):
    assert predictor.manifest["name"] == "xxact-test"
    assert predictor.reference.path == os.path.join(exported, compact_reference.FILE_NAME)
  assert xxact_jax.load(reference="none").reference is None
  # A user's own prepared dataset as the reference (all its rows).
  own = xxact_jax.load(reference=embedded_dataset).reference
  assert own.path == embedded_dataset and len(own) == 1000
  shipped = xxact_jax.load()
  trained = xxact_jax.load(workdir, reference="none")
  rng = np.random.default_rng(0)
  species = np.tile(np.array([[14, 8] + [0] * 8], np.int32), (3, 1))
  fractions = np.tile(np.array([[1 / 3, 2 / 3] + [0] * 8], np.float32), (3, 1))
  xrd = rng.uniform(0, 100, (3, 4250)).astype(np.float32)
  a, b = shipped.predict_arrays(species, fractions, xrd), trained.predict_arrays(
      species, fractions, xrd)
  # The export measured its tolerance (1e-3) on other inputs than these random patterns.
  tolerance = 1e-5 if shipped.manifest["params_dtype"] == "float32" else 2e-3
  for t in shipped.targets:
    np.testing.assert_allclose(a[t], b[t], atol=tolerance)


def test_predict_cli_without_workdir_on_the_sample_scan_and_a_cif(exported, use_model, capsys):
  from xxact_jax import predict  # pylint: disable=g-import-not-at-top
  use_model(exported)
  sample = pretrained.quick_start_sample()
  assert os.path.isfile(sample["path"])
  assert predict.main([f"--formula={sample['formula']}", f"--xrd={sample['path']}"]) == 0
  record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert record["crystal_system"]["prediction"] in record["crystal_system"]["probabilities"]
  assert record["formation_energy_per_atom"]["unit"] == "eV/atom"
  cif = os.path.join(PRETRAINED_FIXTURES, "mp-11237.cif")
  assert predict.main([f"--cif={cif}", "--reference=none"]) == 0
  record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert record["formula"] == "ScAg" and "spacegroup_number" in record


@pytest.mark.skipif(not os.path.isfile(DEV_INDEX), reason="no measured development scans")
def test_evaluate_measured_without_workdir(exported, use_model, tmp_path):
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  use_model(exported)
  index = tmp_path / "index.csv"
  lines = open(DEV_INDEX).read().splitlines()
  base = os.path.dirname(DEV_INDEX)
  header = lines[0].split(",")
  rows = [dict(zip(header, l.split(",")[:len(header)])) for l in lines[1:4]]
  with open(index, "w") as f:
    f.write("file,formula,crystal_system,spacegroup_number,wavelength_angstrom\n")
    for r in rows:
      f.write(f"{os.path.join(base, r['file'])},{r['formula']},{r['crystal_system']},"
              f"{r['spacegroup_number']},{r['wavelength_angstrom']}\n")
  metrics = evaluate.evaluate_measured("pretrained", str(index), str(tmp_path / "out"))
  assert metrics["scans_evaluated"] == 3 and metrics["reference"]["path"].endswith(
      compact_reference.FILE_NAME)


def test_evaluate_data_needs_a_workdir(tmp_path):
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit, match="--data scores a trained workdir"):
    evaluate.main([f"--data={tmp_path}", f"--output={tmp_path / 'out'}"])


# The compact reference.

def test_compact_reference_redraws_the_stored_patterns(exported, embedded_dataset):
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  compact = compact_reference.CompactDataset(exported)
  ds = open_dataset(embedded_dataset, "train")
  assert len(compact) == len(ds)
  assert compact.material_ids([0, 5]) == ds.material_ids(np.array([0, 5]))
  rows = np.arange(0, len(ds), 45)
  stored = ds.read_batch(rows, ("xrd",))["xrd"].astype(np.float64)
  drawn = compact.read_batch(rows, ("xrd",))["xrd"].astype(np.float64)
  kernel = reference_lib._kernel(reference_lib.COMPARE_SIGMA_DEG)  # pylint: disable=protected-access
  mask = np.ones_like(stored, bool)
  cosine = np.sum(reference_lib._prepared(drawn, mask, kernel)  # pylint: disable=protected-access
                  * reference_lib._prepared(stored, mask, kernel), axis=1)  # pylint: disable=protected-access
  assert cosine.min() > 0.995, cosine.min()
  assert np.abs(drawn - stored).max(axis=1).mean() < 3.0
  # Labels and compositions are the dataset's.
  labels = ds.read_batch(rows, ("species", "fractions", "crystal_system", "spacegroup_number"))
  mine = compact.read_batch(rows, ("species", "fractions", "crystal_system",
                                   "spacegroup_number"))
  np.testing.assert_array_equal(mine["species"], labels["species"])
  np.testing.assert_array_equal(mine["crystal_system"], labels["crystal_system"])
  np.testing.assert_array_equal(mine["spacegroup_number"], labels["spacegroup_number"])
  np.testing.assert_allclose(mine["fractions"], labels["fractions"], atol=5e-4 + 1e-7)


def test_compact_reference_lookup_answers_as_the_dataset(exported, embedded_dataset):
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  full = reference_lib.ReferenceDatabase(embedded_dataset, "train")
  compact = reference_lib.resolve(os.path.join(exported, compact_reference.FILE_NAME), None)
  assert isinstance(compact, reference_lib.ReferenceDatabase) and len(compact) == len(full)
  ds = open_dataset(embedded_dataset, "train")
  rows = np.arange(0, len(ds), 30)
  batch = ds.read_batch(rows, ("species", "fractions", "xrd"))
  for s, f, x in zip(batch["species"], batch["fractions"], batch["xrd"]):
    a, b = full.match(s, f, x), compact.match(s, f, x)
    assert (a.material_id, a.crystal_system, a.spacegroup_number) == (
        b.material_id, b.crystal_system, b.spacegroup_number)
    assert abs(a.similarity - b.similarity) < 0.01


def test_compact_reference_refuses_another_format(exported, tmp_path):
  path = str(tmp_path / "reference.npz")
  with np.load(os.path.join(exported, compact_reference.FILE_NAME)) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(str(arrays["meta"]))
  meta["format_version"] = compact_reference.FORMAT_VERSION + 1
  arrays["meta"] = np.asarray(json.dumps(meta))
  np.savez(path, **arrays)
  with pytest.raises(compact_reference.CompactReferenceError, match="reads version 1 only"):
    compact_reference.CompactDataset(path)


def test_peak_extraction_recovers_sticks():
  from xxact_jax.data.xrd import smear_sticks  # pylint: disable=g-import-not-at-top
  two_theta = np.array([20.013, 35.5, 35.62, 61.207, 88.9])
  heights = np.array([40.0, 100.0, 55.0, 7.0, 0.5])
  pattern = smear_sticks(two_theta, heights)
  (found, found_heights), = compact_reference.extract_peaks(pattern[None])
  found, found_heights = compact_reference.refine_heights(
      pattern, *compact_reference.refine_peaks(pattern, found, found_heights))
  drawn = compact_reference.draw(*compact_reference.encode_peaks(found, found_heights))
  assert np.abs(drawn - pattern).max() < 1.5
  # Lone peaks come back where they were.
  for t in (20.013, 61.207, 88.9):
    assert np.min(np.abs(found - t)) < 0.003


# Format versions and damage.

@pytest.mark.parametrize("version", [0, pretrained.FORMAT_VERSION + 1])
def test_an_unreadable_format_version_is_refused_in_one_line(exported, tmp_path, use_model,
                                                            capsys, version):
  import xxact_jax  # pylint: disable=g-import-not-at-top
  from xxact_jax import predict  # pylint: disable=g-import-not-at-top
  copy = _copy(exported, tmp_path)
  _rewrite_manifest(copy, format_version=version)
  with pytest.raises(pretrained.FormatError, match=f"format version {version}; this xxact_jax"):
    xxact_jax.load(copy)
  use_model(copy)
  sample = pretrained.quick_start_sample()
  assert predict.main([f"--formula={sample['formula']}", f"--xrd={sample['path']}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  errors = [line for line in err if line.startswith("error:")]
  assert len(errors) == 1 and "xxact-test v0 has format version" in errors[0]
  assert ("upgrade xxact_jax" in errors[0]) == (version > pretrained.FORMAT_VERSION)


def test_a_damaged_file_is_refused(exported, tmp_path):
  copy = _copy(exported, tmp_path)
  path = os.path.join(copy, "members", "0", "config.json")
  with open(path, "a") as f:
    f.write(" ")
  with pytest.raises(pretrained.FormatError, match="members/0/config.json differs"):
    pretrained.load(copy)


def test_no_shipped_model_says_what_to_do(monkeypatch, tmp_path):
  monkeypatch.delenv(pretrained.ENVIRONMENT_VARIABLE, raising=False)
  monkeypatch.setattr(pretrained, "PACKAGE_DIR", str(tmp_path))
  with pytest.raises(InputError, match="no shipped model.*--workdir"):
    pretrained.find()


# The model shipped with the package (skipped while there is none).

def _shipped():
  found = pretrained.shipped_dirs()
  if not found or os.environ.get(pretrained.ENVIRONMENT_VARIABLE):
    pytest.skip("no shipped model in xxact_jax/pretrained/ yet (experiments/pretrained.sh)")
  return pretrained.find()


def _expected() -> dict:
  with open(os.path.join(PRETRAINED_FIXTURES, "expected.json")) as f:
    return json.load(f)


def test_shipped_model_loads_and_fits_the_size_limit():
  model_dir = _shipped()
  import xxact_jax  # pylint: disable=g-import-not-at-top
  predictor = xxact_jax.load()
  manifest = predictor.manifest
  assert manifest["format_version"] in pretrained.SUPPORTED_FORMAT_VERSIONS
  assert set(manifest["targets"]) == {"formation_energy_per_atom", "band_gap", "crystal_system",
                                      "spacegroup_number"}
  size = sum(os.path.getsize(os.path.join(root, n))
             for root, _, names in os.walk(model_dir) for n in names)
  assert size <= SIZE_LIMIT_BYTES
  assert isinstance(predictor.reference, reference_lib.ReferenceDatabase)


def _recorded(expected: dict, manifest: dict):
  recorded = expected.get("recorded_with")
  return recorded == f"{manifest['name']} v{manifest['version']}"


def test_shipped_model_answers_known_cifs():
  _shipped()
  import xxact_jax  # pylint: disable=g-import-not-at-top
  predictor = xxact_jax.load()
  expected = _expected()
  if not _recorded(expected, predictor.manifest):
    pytest.skip("expected answers not recorded for this model "
                "(python tests/fixtures/pretrained/record_expected.py)")
  for name, case in expected["cifs"].items():
    out = predictor.predict(cif=os.path.join(PRETRAINED_FIXTURES, case["file"]))
    answer = case["answer"]
    assert out["crystal_system"]["prediction"] == answer["crystal_system"], name
    assert out["spacegroup_number"]["top5"][0]["spacegroup_number"] == answer[
        "spacegroup_number"], name
    for t in ("formation_energy_per_atom", "band_gap"):
      assert abs(out[t]["value"] - answer[t]) < 2e-3, (name, t)


def test_shipped_model_answers_the_sample_and_a_development_scan():
  _shipped()
  import xxact_jax  # pylint: disable=g-import-not-at-top
  predictor = xxact_jax.load()
  expected = _expected()
  if not _recorded(expected, predictor.manifest):
    pytest.skip("expected answers not recorded for this model "
                "(python tests/fixtures/pretrained/record_expected.py)")
  for name, case in expected["scans"].items():
    path = (pretrained.quick_start_sample()["path"] if case["file"] == "<sample>"
            else os.path.join(os.path.dirname(DEV_INDEX), case["file"]))
    if not os.path.isfile(path):
      continue    # the development scans stay outside the package
    out = predictor.predict(case["formula"], path, case.get("wavelength"))
    answer = case["answer"]
    if answer is None:
      continue
    assert out["crystal_system"]["prediction"] == answer["crystal_system"], name
    assert out["spacegroup_number"]["top5"][0]["spacegroup_number"] == answer[
        "spacegroup_number"], name
    assert bool(out.get("reference", {}).get("answered")) == answer["reference_answered"], name


# The rebuild script.

@pytest.mark.slow
def test_rebuild_script_trains_exports_and_scores(embedded_dataset, tmp_path):
  """experiments/pretrained.sh end to end at a tiny setting: one seeded member, the export, the
  model card's figures; the config shipped is the run's, the manifest names the script's."""
  import subprocess  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  output = tmp_path / "model"
  env = dict(os.environ, CONFIG="configs/measured.py:runlocal,targets=all", STEPS="4",
             BATCH="16", SEEDS="3", DATA=embedded_dataset, MEASURED=str(tmp_path / "none.csv"),
             OUTPUT=str(output), NAME="xxact-dry", VERSION="0")
  env.pop(pretrained.ENVIRONMENT_VARIABLE, None)
  done = subprocess.run(["bash", os.path.join(repo, "experiments", "pretrained.sh"),
                         str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                        timeout=1200, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  manifest = pretrained.read_manifest(str(output))
  assert (manifest["name"], manifest["version"]) == ("xxact-dry", "0")
  assert manifest["training"]["config"] == "configs/measured.py:runlocal,targets=all"
  assert "STEPS=4" in manifest["command"] and "pretrained.sh" in manifest["command"]
  assert [m["seed"] for m in manifest["members"]] == [3]
  assert manifest["members"][0]["train_seconds"] is not None
  with open(tmp_path / "runs" / "seed3" / "config.json") as f:
    run_config = json.load(f)
  with open(output / "config.json") as f:
    shipped_config = json.load(f)
  assert shipped_config == run_config
  metrics = json.load(open(tmp_path / "runs" / "metrics" / "metrics.json"))
  assert metrics["test"]["rows"] > 0 and metrics["timings"]["predict_cli_status"] == 0
