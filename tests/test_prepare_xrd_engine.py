"""prepare --xrd_engine=jax against --xrd_engine=pymatgen: same arrays, engine errors, resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from xxact_jax.data import build_dataset
from xxact_jax.data import schema
from xxact_jax.data import store
from xxact_jax.data import subset as subset_lib

from test_faults_prepare import cubic_cif


@pytest.fixture(scope="module")
def source(tmp_path_factory, fixtures_dir) -> str:
  """The 8 fixture rows plus two the engine refuses: Es (no scattering parameters in pymatgen's
  table) at row 4, and a 0.7 Å cell with no reflection inside 5-90° at row 9."""
  table = pd.read_csv(os.path.join(fixtures_dir, "mp_small.csv.gz"))
  extra = []
  for material_id, a, element in (("mp-es", 4.0, "Es"), ("mp-tiny", 0.7, "Na")):
    row = table.iloc[0].copy()
    row["material_id"], row["cif"] = material_id, cubic_cif(a, material_id, element)
    extra.append(pd.DataFrame([row]))
  table = pd.concat([table.iloc[:4], extra[0], table.iloc[4:], extra[1]], ignore_index=True)
  path = str(tmp_path_factory.mktemp("xrd_engine_source") / "mp.csv")
  table.to_csv(path, index=False)
  return path


_ARGS = dict(block_rows=3, test_fraction=0.25, seed=1)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> str:
  """pymatgen on 2 workers: the reference both jax runs (workers=0 and 2) are compared to."""
  path = str(tmp_path_factory.mktemp("pymatgen_w2"))
  build_dataset.prepare_dataset([source], path, workers=2, xrd_engine="pymatgen", **_ARGS)
  return path


def _arrays(path) -> dict:
  names = schema.fields(schema.DEFAULT_MAX_ELEMENTS)
  return {n: store.read_full(a) for n, a in store.open_arrays(path, names).items()}


def _errors(path) -> dict:
  with open(os.path.join(path, schema.ERRORS_FILE)) as f:
    return {e["row"]: e["reason"] for e in map(json.loads, f)}


def _metadata(path) -> dict:
  with open(os.path.join(path, schema.METADATA_FILE)) as f:
    return json.load(f)


@pytest.mark.parametrize("workers", [0, 2])
def test_engines_give_the_same_dataset(source, reference, tmp_path, workers):
  engine = "jax"
  path = str(tmp_path / "ds")
  summary = build_dataset.prepare_dataset([source], path, workers=workers, xrd_engine=engine,
                                          **_ARGS)
  assert summary["complete"] and summary["valid_total"] == 8 and summary["errors_total"] == 2
  expected, actual = _arrays(reference), _arrays(path)
  for name in expected:
    if name == "xrd":
      difference = np.abs(expected[name].astype(np.float64) - actual[name].astype(np.float64))
      assert difference.max() <= 0.1, difference.max()
      assert actual[name][actual["valid"] == 1].max(axis=1).min() == 100
    else:
      np.testing.assert_array_equal(expected[name], actual[name], err_msg=name)
  assert sorted(_errors(path)) == sorted(_errors(reference)) == [4, 9]
  assert _metadata(path)["xrd_engine"] == engine
  assert _metadata(reference)["xrd_engine"] == "pymatgen"
  errors = _errors(path)
  assert "no atomic scattering parameters for Es" in errors[4] and "xrd_engine=jax" in errors[4]
  assert "no intensity on the 5-90° grid" in errors[9]
  assert all(r.startswith(f"{source}:row {row}: xrd: ") for row, r in errors.items())
  assert "scattering coefficients for Es" in _errors(reference)[4]   # pymatgen's own reason
  if workers == 0:   # a subset keeps the engine of its source
    subset_lib.subset_dataset(path, str(tmp_path / "subset"), 4, seed=0)
    assert _metadata(str(tmp_path / "subset"))["xrd_engine"] == "jax"


def test_resume_with_the_other_engine_is_refused(source, tmp_path):
  path = str(tmp_path / "ds")
  args = dict(_ARGS, workers=0, num_shards=2)
  build_dataset.prepare_dataset([source], path, shard=1, xrd_engine="jax", **args)
  with open(os.path.join(path, schema.PLAN_FILE)) as f:
    assert json.load(f)["config"]["xrd_engine"] == "jax"
  with pytest.raises(ValueError, match=r"different arguments \(\['xrd_engine'\]\)"):
    build_dataset.prepare_dataset([source], path, shard=0, xrd_engine="pymatgen", **args)
  summary = build_dataset.prepare_dataset([source], path, shard=0, xrd_engine="jax", **args)
  assert summary["complete"] and summary["blocks_done_now"] == 2
  assert _metadata(path)["xrd_engine"] == "jax"


def test_a_plan_without_an_engine_means_pymatgen(source, tmp_path):
  path = str(tmp_path / "ds")
  args = dict(_ARGS, workers=0, num_shards=2, limit=6)
  build_dataset.prepare_dataset([source], path, shard=1, xrd_engine="pymatgen", **args)
  kv = store.open_kvstore(path)
  plan = store.read_json(kv, schema.PLAN_FILE)
  del plan["config"]["xrd_engine"]   # written before the field existed
  store.write_json(kv, schema.PLAN_FILE, plan)
  with pytest.raises(ValueError, match="xrd_engine"):
    build_dataset.prepare_dataset([source], path, shard=0, xrd_engine="jax", **args)
  assert build_dataset.prepare_dataset([source], path, shard=0, xrd_engine="pymatgen",
                                       **args)["complete"]
  assert _metadata(path)["xrd_engine"] == "pymatgen"


def test_unknown_engine_is_refused(source, tmp_path):
  with pytest.raises(ValueError, match="xrd_engine must be one of"):
    build_dataset.prepare_dataset([source], str(tmp_path / "ds"), workers=0, xrd_engine="cuda")


def test_training_path_does_not_import_the_engine():
  code = ("import sys\n"
          "import xxact_jax.training, xxact_jax.models, xxact_jax.data.dataset\n"
          "import xxact_jax.data.build_dataset\n"
          "bad = sorted(m for m in sys.modules if m.startswith(('xxact_jax.xrd_engine', "
          "'pymatgen')))\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
