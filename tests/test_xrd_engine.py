"""XRD engine (JAX) against pymatgen XRDCalculator + xrd.smear_sticks on small fixtures."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from pymatgen.analysis.diffraction.xrd import XRDCalculator  # pylint: disable=g-import-not-at-top
from pymatgen.core import Lattice  # pylint: disable=g-import-not-at-top
from pymatgen.core import Structure  # pylint: disable=g-import-not-at-top

from xxact_jax import constants  # pylint: disable=g-import-not-at-top
from xxact_jax import xrd_engine  # pylint: disable=g-import-not-at-top
from xxact_jax.data import xrd as xrd_lib  # pylint: disable=g-import-not-at-top
from xxact_jax.xrd_engine import device  # pylint: disable=g-import-not-at-top
from xxact_jax.xrd_engine import planning  # pylint: disable=g-import-not-at-top
from xxact_jax.xrd_engine import scattering  # pylint: disable=g-import-not-at-top
from float32_tolerance import assert_close

RANGE = (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX)


def _triclinic():
  return Structure(Lattice.from_parameters(4.1, 5.3, 6.7, 77, 83, 101), ["Fe", "O", "O", "Ti"],
                   [[0.1, 0.2, 0.3], [0.5, 0.1, 0.9], [0.33, 0.71, 0.42], [0.8, 0.6, 0.15]])


FIXTURES = {
    "Si": lambda: Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]),
    "NaCl": lambda: Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                              [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "triclinic": _triclinic,
    # CsCl type with a disordered half-Fe, half-Ni site: the (100) superlattice peak goes as
    # (f_site - f_Al)², so it depends on how the site's species are summed.
    "Fe0.5Ni0.5": lambda: Structure(Lattice.cubic(2.9), [{"Fe": 0.5, "Ni": 0.5}, "Al"],
                                    [[0, 0, 0], [0.5, 0.5, 0.5]]),
}


def _reference(structure, wavelength="CuKa"):
  sticks = XRDCalculator(wavelength).get_pattern(structure, two_theta_range=RANGE)
  x, y = np.asarray(sticks.x), np.asarray(sticks.y)
  return xrd_lib.smear_sticks(x, y), x, y


def _assert_agrees(pattern, sticks, reference):
  ref_pattern, ref_x, ref_y = reference
  assert pattern.shape == (constants.NUM_XRD_POINTS,) and pattern.dtype == np.float32
  assert np.abs(pattern - ref_pattern).max() <= 0.1
  x, y = sticks
  assert len(x) == len(ref_x)
  assert np.abs(x - ref_x).max() <= 1e-4
  assert np.abs(y - ref_y).max() <= 1e-3      # both on pymatgen's 0-100 stick scale


@pytest.fixture(scope="module")
def structures():
  return {name: make() for name, make in FIXTURES.items()}


@pytest.fixture(scope="module")
def engine_result(structures):
  return xrd_engine.simulate(list(structures.values()), return_sticks=True)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_fixture_agrees_with_pymatgen(name, structures, engine_result):
  i = list(FIXTURES).index(name)
  _assert_agrees(engine_result.patterns[i], engine_result.sticks[i],
                 _reference(structures[name]))


def test_disordered_site_sums_its_species(engine_result):
  # Fe0.5Ni0.5 scatters as the occupancy-weighted sum of Fe and Ni, not as either element.
  i = list(FIXTURES).index("Fe0.5Ni0.5")
  for element in ("Fe", "Ni"):
    pure = Structure(Lattice.cubic(2.9), [element, "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert np.abs(engine_result.patterns[i] - xrd_engine.simulate([pure])[0]).max() > 0.5


def test_molybdenum_wavelength(structures):
  names = ["NaCl", "triclinic"]
  result = xrd_engine.simulate([structures[n] for n in names], wavelength=0.71073,
                               return_sticks=True)
  for i, name in enumerate(names):
    _assert_agrees(result.patterns[i], result.sticks[i], _reference(structures[name], "MoKa"))
  by_name = xrd_engine.simulate([structures["NaCl"]], wavelength="MoKa")
  np.testing.assert_array_equal(by_name[0], result.patterns[0])


def test_large_cell_past_4096_reflections(structures):
  # A 3×3×3 triclinic supercell: ~5,800 reflections and 108 sites, past the 4,096 rows where
  # XLA's CPU YNNPACK reduction fusion went wrong (device._CPU_OPTIONS).
  big = structures["triclinic"] * (3, 3, 3)
  assert len(planning.reflections(big.lattice.matrix, constants.CU_KA_LINES[0], RANGE)) > 4096
  result = xrd_engine.simulate([big], return_sticks=True)
  _assert_agrees(result.patterns[0], result.sticks[0], _reference(big))


def test_padding_invariance(structures):
  """The same structure padded to two bucket sizes (sites, reflections, rows) agrees."""
  arrays = xrd_engine.structure_arrays(structures["triclinic"])
  planned = planning.plan_structure(0, *arrays, constants.CU_KA_LINES[0], RANGE)
  table = scattering.scattering_table()[0]
  import jax  # pylint: disable=g-import-not-at-top
  outputs = []
  with jax.enable_x64(True):
    for key, rows in (planned.shape_key, 1), ((16, 384, 16), 4):
      packed = planning.pack([planned], key, rows)
      outputs.append([np.asarray(x)[0] for x in device.simulate_padded(
          packed, np.float64(constants.CU_KA_LINES[0]), table, sigma=constants.XRD_SIGMA)])
  (pattern_a, _, x_a, y_a), (pattern_b, _, x_b, y_b) = outputs
  np.testing.assert_allclose(pattern_a, pattern_b, atol=1e-4)
  n = len(planned.hkl)
  np.testing.assert_array_equal(x_a[:n], x_b[:n])
  assert not np.any(y_b[n:])

  # Zero-number site entries (padding) in simulate_arrays change nothing either.
  batch = xrd_engine.structures_to_batch([structures["triclinic"]], sites=12)
  padded = xrd_engine.simulate_arrays(**batch).patterns[0]
  np.testing.assert_allclose(padded, pattern_a, atol=1e-4)


def test_structures_to_batch_expands_disordered_sites(structures):
  batch = xrd_engine.structures_to_batch([structures["Si"], structures["Fe0.5Ni0.5"]])
  assert batch["numbers"].shape == (2, 8)            # 8 Si sites; Fe, Ni, Al and padding
  np.testing.assert_array_equal(batch["numbers"][1], [26, 28, 13, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(batch["occupancies"][1], [0.5, 0.5, 1, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(batch["lattice"][0], structures["Si"].lattice.matrix)


def _bad_batch(structures, bad):
  batch = xrd_engine.structures_to_batch([structures["Si"], structures["NaCl"],
                                          structures["Si"]])
  bad(batch)
  return batch


@pytest.mark.parametrize("name,bad,message", [
    ("no sites", lambda b: b["numbers"].__setitem__(2, 0), "structure 2: no atom sites"),
    ("zero volume", lambda b: b["lattice"].__setitem__((2, 2), b["lattice"][2, 0]),
     "structure 2: the cell volume is 0"),
    ("no scattering parameters", lambda b: b["numbers"].__setitem__((2, 1), 99),
     "structure 2: no atomic scattering parameters for Es"),
    ("non-finite coordinates", lambda b: b["frac_coords"].__setitem__((2, 0, 0), np.nan),
     "structure 2: non-finite site coordinates"),
])
def test_bad_structures_name_their_index(structures, name, bad, message):
  del name
  batch = _bad_batch(structures, bad)
  with pytest.raises(xrd_engine.XRDEngineError, match=message):
    xrd_engine.simulate_arrays(**batch)


def test_bad_structures_returned_in_place(structures):
  batch = _bad_batch(structures, lambda b: b["numbers"].__setitem__(1, 0))
  planned = planning.plan_structures(
      list(zip(batch["lattice"], batch["frac_coords"], batch["numbers"], batch["occupancies"])),
      constants.CU_KA_LINES[0], RANGE, errors="return")
  assert isinstance(planned[1], xrd_engine.XRDEngineError)
  assert str(planned[1]).startswith("structure 1: no atom sites")
  assert all(isinstance(p, planning.Planned) for p in (planned[0], planned[2]))


def test_pymatgen_structure_errors_name_their_index(structures):
  empty = Structure(Lattice.cubic(4.0), [], [])
  with pytest.raises(xrd_engine.XRDEngineError, match="structure 1: no atom sites"):
    xrd_engine.simulate([structures["Si"], empty])
  einsteinium = Structure(Lattice.cubic(4.0), ["Es"], [[0, 0, 0]])
  with pytest.raises(xrd_engine.XRDEngineError, match="structure 0: no atomic scattering"):
    xrd_engine.simulate([einsteinium])
  with pytest.raises(xrd_engine.XRDEngineError, match="structure 0: cell too large"):
    xrd_engine.simulate([structures["Si"]], max_reflections=10)


def test_import_does_not_load_pymatgen():
  code = ("import sys, xxact_jax, xxact_jax.data, xxact_jax.xrd_engine; "
          "assert 'pymatgen.core' not in sys.modules, 'pymatgen imported'; "
          "import xxact_jax as x; assert 'xxact_jax.xrd_engine' in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)
  code = ("import sys, xxact_jax, xxact_jax.data; "
          "assert 'xxact_jax.xrd_engine' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_return_keeps_the_good_structures(structures, engine_result):
  empty = Structure(Lattice.cubic(4.0), [], [])
  tiny = Structure(Lattice.cubic(0.9), ["Si"], [[0, 0, 0]])    # no reflection up to 90°
  result = xrd_engine.simulate([structures["Si"], empty, tiny], errors="return")
  assert sorted(result.errors) == [1, 2]
  assert result.errors[1].startswith("structure 1: no atom sites")
  assert result.errors[2].startswith("structure 2: the XRD pattern has no intensity")
  np.testing.assert_array_equal(result.patterns[0], engine_result.patterns[0])
  assert not np.any(result.patterns[1:])


def test_chunked_passes_agree(structures):
  """Chunks of structures, chunks of reflections and one pass give the same |F|² and patterns."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  planned = planning.plan_structures(
      [xrd_engine.structure_arrays(structures[n]) for n in ("triclinic", "NaCl")],
      constants.CU_KA_LINES[0], RANGE)
  key = tuple(max(k) for k in zip(*(p.shape_key for p in planned)))
  a = planning.pack(planned, key, 2)
  table = scattering.scattering_table()[0]
  per_row = key[0] * key[1]
  args = (a["lattice"], a["hkl"], a["frac_coords"], a["occupancies"], a["slots"], a["elements"],
          table)
  structure_factors = device._structure_factors  # pylint: disable=protected-access
  pattern_program = device._patterns  # pylint: disable=protected-access
  with jax.enable_x64(True):
    f2 = [np.asarray(jax.jit(functools.partial(structure_factors, pairs_per_chunk=budget))(*args))
          for budget in (2 * per_row, per_row, per_row // 3)]
    patterns = [np.asarray(jax.jit(functools.partial(
        pattern_program, sigma=constants.XRD_SIGMA, reflections_per_chunk=budget))(
            a["lattice"], a["hkl"], a["num_reflections"], np.float64(constants.CU_KA_LINES[0]),
            f2[0], a["texture_hkl"], a["march_r"], a["b_factor"])[0])
                for budget in (2 * key[1], key[1])]
  for other in f2[1:]:   # float32 sums in another order
    assert_close(other, f2[0])
  np.testing.assert_allclose(patterns[1], patterns[0], atol=1e-5)
