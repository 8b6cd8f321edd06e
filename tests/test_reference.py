"""Phase identification against a reference dataset (inference/reference.py)."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from pymatgen.core import Lattice  # pylint: disable=g-import-not-at-top
from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top
from pymatgen.io.cif import CifWriter  # pylint: disable=g-import-not-at-top

from xxact_jax import constants  # pylint: disable=g-import-not-at-top
from xxact_jax import xrd_engine  # pylint: disable=g-import-not-at-top
from xxact_jax.data import build_dataset  # pylint: disable=g-import-not-at-top
from xxact_jax.data import composition  # pylint: disable=g-import-not-at-top
from xxact_jax.inference import answers  # pylint: disable=g-import-not-at-top
from xxact_jax.inference import patterns  # pylint: disable=g-import-not-at-top
from xxact_jax.inference import reference  # pylint: disable=g-import-not-at-top

GRID = constants.two_theta_grid()


def _rutile():
  return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                   [[0, 0, 0], [0.3049, 0.3049, 0]])


def _anatase():
  return Structure.from_spacegroup("I4_1/amd", Lattice.tetragonal(3.785, 9.514), ["Ti", "O"],
                                   [[0, 0.75, 0.125], [0, 0.75, 0.3333]])


def _fluorite_tio2():
  """TiO2's cubic high-pressure polymorph."""
  return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.87), ["Ti", "O"],
                                   [[0, 0, 0], [0.25, 0.25, 0.25]])


def _rocksalt():
  return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                   [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def database(tmp_path_factory):
  """TiO2 in three polymorphs and NaCl, prepared as a dataset (all rows train)."""
  cifs = tmp_path_factory.mktemp("cifs")
  structures = {"rutile": _rutile(), "anatase": _anatase(), "fluorite": _fluorite_tio2(),
                "rocksalt": _rocksalt()}
  for name, structure in structures.items():
    CifWriter(structure).write_file(str(cifs / f"{name}.cif"))
  (cifs / "labels.csv").write_text("material_id,formation_energy_per_atom,band_gap\n"
                                   "rutile,-3.3,1.8\nanatase,-3.2,2.1\nfluorite,-2.9,1.0\n"
                                   "rocksalt,-2.1,5.0\n")
  path = str(tmp_path_factory.mktemp("reference"))
  build_dataset.prepare_dataset([str(cifs)], path, workers=0, test_fraction=0.0)
  return reference.ReferenceDatabase(path, "train")


def _scan(structure, strain=0.0, background=0.0):
  """A measured-like grid pattern: the engine's pattern of the cell scaled by (1 + strain),
  broadened, on a sloping background, measured from 10°."""
  scaled = structure.copy()
  scaled.scale_lattice(structure.volume * (1 + strain) ** 3)
  pattern = xrd_engine.simulate([scaled])[0].astype(np.float64)
  kernel = np.exp(-0.5 * (np.arange(-20, 21) * 0.02 / 0.1) ** 2)
  pattern = np.convolve(pattern, kernel / kernel.max(), mode="same")
  pattern = 100 * pattern / pattern.max() + background * np.exp(-(GRID - 5) / 30)
  pattern[GRID < 10] = constants.UNMEASURED_INTENSITY
  return pattern


def _composition(formula):
  return composition.encode_composition(composition.parse_formula(formula), 10)


def test_the_pattern_picks_the_polymorph_and_the_lattice_scaling(database):
  assert len(database.candidates(*_composition("TiO2"))) == 3
  for structure, name, group in ((_anatase(), "anatase", 141), (_rutile(), "rutile", 136)):
    match = database.match(*_composition("Ti2O4"), _scan(structure, strain=0.012))
    assert (match.material_id, match.spacegroup_number, match.candidates) == (name, group, 3)
    assert constants.CRYSTAL_SYSTEMS[match.crystal_system] == "tetragonal"
    assert match.strain == pytest.approx(0.012, abs=0.0021)
    assert match.similarity > 0.9


def test_an_indexed_lattice_picks_among_the_polymorphs_it_allows(database):
  scan = _scan(_rutile())
  cubic, tetragonal, trigonal = (constants.CRYSTAL_SYSTEMS.index(s)
                                 for s in ("cubic", "tetragonal", "trigonal"))
  only_cubic = database.match(*_composition("TiO2"), scan, systems=(cubic,))
  assert (only_cubic.material_id, only_cubic.lattice_candidates) == ("fluorite", 1)
  both = database.match(*_composition("TiO2"), scan, systems=(tetragonal,))
  assert (both.material_id, both.lattice_candidates) == ("rutile", 2)
  # No row of the lattice's systems: all rows are compared, as without a lattice.
  none = database.match(*_composition("TiO2"), scan, systems=(trigonal,))
  assert (none.material_id, none.lattice_candidates, none.candidates) == ("rutile", 0, 3)
  assert "lattice_candidates" not in answers.match_json(database.match(*_composition("TiO2"), scan))


def test_a_composition_the_reference_lacks_has_no_match(database):
  assert database.match(*_composition("Fe2O3"), _scan(_rocksalt())) is None
  match = database.match(*_composition("NaCl"), None)
  assert match.material_id == "rocksalt" and math.isnan(match.similarity)


def test_apply_keeps_the_models_answer_beside_the_reference(database):
  from xxact_jax.inference import identification  # pylint: disable=g-import-not-at-top
  groups = np.zeros(230, np.float32)
  groups[[224, 135]] = [0.6, 0.2]                         # Fm-3m, P4_2/mnm
  outputs = {"crystal_system": np.eye(7, dtype=np.float32)[6], "spacegroup_number": groups}
  targets = ("crystal_system", "spacegroup_number")
  match = database.match(*_composition("TiO2"), _scan(_rutile()))
  result = answers.identified_prediction(outputs, targets, identification.Identification(match))
  assert result["crystal_system"]["prediction"] == "tetragonal"
  assert result["crystal_system"]["model_prediction"] == "cubic"
  assert [g["spacegroup_number"] for g in result["spacegroup_number"]["top5"][:2]] == [136, 225]
  assert result["reference"]["material_id"] == "rutile"
  assert (answers.identified_prediction(outputs, targets, identification.Identification())
          == answers.format_prediction(outputs, targets))
  np.testing.assert_array_equal(identification.override(np.full(7, 1 / 7), 3), np.eye(7)[3])


def test_resolve_names_its_sources(database, tmp_path):
  assert reference.resolve("none", database.path) is None
  assert reference.resolve(None, database.path) is None
  assert reference.resolve("auto", str(tmp_path / "gone")) is None
  assert len(reference.resolve("auto", database.path)) == 4
  assert reference.resolve(database.path, None).split is None


def test_predict_and_evaluate_answer_known_compositions_from_the_reference(database, workdir,
                                                                          tmp_path, monkeypatch):
  from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  scans = tmp_path / "scans"
  scans.mkdir()
  rows = ["file,formula,crystal_system,spacegroup_number"]
  for name, structure, formula, system, group in (
      ("rutile", _rutile(), "TiO2", "tetragonal", 136),
      ("rocksalt", _rocksalt(), "NaCl", "cubic", 225),
      ("unknown", _rocksalt(), "KBr", "cubic", 225)):
    pattern = _scan(structure, strain=0.01, background=5)
    keep = pattern >= 0
    np.savetxt(scans / f"{name}.xy", np.stack([GRID[keep], pattern[keep]], axis=1))
    rows.append(f"{name}.xy,{formula},{system},{group}")
  (scans / "index.csv").write_text("\n".join(rows) + "\n")

  predictor = predictor_lib.load(workdir, reference=database.path)
  # One read of the file serves the model, the indexing and the lookup.
  reads = []
  read_pattern = patterns.read_pattern
  monkeypatch.setattr(patterns, "read_pattern",
                      lambda path: reads.append(path) or read_pattern(path))
  result = predictor.predict("TiO2", str(scans / "rutile.xy"))
  assert reads == [str(scans / "rutile.xy")]
  assert result["crystal_system"]["prediction"] == "tetragonal"
  assert result["reference"]["material_id"] == "rutile"
  unknown = predictor.predict("KBr", str(scans / "unknown.xy"))
  assert "reference" not in unknown
  # Not in the reference: the rock-salt lines index as face-centred cubic, and the model's
  # answer is restricted to cubic; without indexing the model answers alone.
  assert unknown["indexing"]["lattice"] == "cubic" and unknown["indexing"]["centring"] == "F"
  assert unknown["crystal_system"]["prediction"] == "cubic"
  assert unknown["crystal_system"]["source"] == "indexing"
  assert all(195 <= g["spacegroup_number"] <= 230
             for g in unknown["spacegroup_number"]["top5"])
  batch = predictor.predict_batch(["KBr"], [str(scans / "unknown.xy")])
  np.testing.assert_allclose(batch["crystal_system"][0],
                             list(unknown["crystal_system"]["probabilities"].values()),
                             rtol=1e-5)
  predictor.indexing = False
  assert "indexing" not in predictor.predict("KBr", str(scans / "unknown.xy"))
  # The predict CLI gives the same answers.
  from xxact_jax import predict as predict_cli  # pylint: disable=g-import-not-at-top
  for flag, indexed in (("--indexing", True), ("--no-indexing", False)):
    output = tmp_path / f"cli{flag}.jsonl"
    reads.clear()
    assert predict_cli.main([f"--workdir={workdir}", "--formula=KBr",
                             f"--xrd={scans / 'unknown.xy'}", f"--reference={database.path}",
                             flag, f"--output={output}"]) == 0
    assert len(reads) == 1
    record = json.loads(output.read_text())
    assert ("indexing" in record) == indexed
    if indexed:
      assert record["crystal_system"] == unknown["crystal_system"]

  reads.clear()
  metrics = evaluate.evaluate_measured(workdir, str(scans / "index.csv"), str(tmp_path / "out"),
                                       reference=database.path)
  assert len(reads) == 3
  assert metrics["reference"]["matched"] == 2
  assert metrics["reference"]["crystal_system_accuracy_matched"] == 1.0
  alone = evaluate.evaluate_measured(workdir, str(scans / "index.csv"), str(tmp_path / "alone"),
                                     reference="none", indexing=False)
  assert alone["reference"] is None
  assert metrics["model_crystal_system_accuracy"] == alone["crystal_system_accuracy"]
  with open(tmp_path / "out" / "predictions.jsonl") as f:
    records = {r["id"]: r for r in map(json.loads, f)}
  assert records["rutile.xy"]["reference"]["material_id"] == "rutile"
  assert "reference" not in records["unknown.xy"]
  assert records["unknown.xy"]["indexing"]["lattice"] == "cubic"
  assert records["unknown.xy"]["crystal_system"] == "cubic"
  assert metrics["indexing"]["indexed"] == 1 and metrics["indexing"]["lattice_allows_label"] == 1
  assert alone["indexing"] is None
  # The model's own answer for the rows the reference answered.
  assert records["rutile.xy"]["model_crystal_system"] in constants.CRYSTAL_SYSTEMS
