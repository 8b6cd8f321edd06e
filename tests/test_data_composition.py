"""parse_formula / encode_composition."""

import numpy as np
import pytest

from xxact_jax.data import composition


@pytest.mark.parametrize("formula, expected", [
    ("Fe2O3", {"Fe": 2.0, "O": 3.0}),
    ("Ca(OH)2", {"Ca": 1.0, "O": 2.0, "H": 2.0}),
    ("Li0.5CoO2", {"Li": 0.5, "Co": 1.0, "O": 2.0}),
    ("K4[Fe(CN)6]", {"K": 4.0, "Fe": 1.0, "C": 6.0, "N": 6.0}),
    ("SiO2 Si", {"Si": 2.0, "O": 2.0}),
])
def test_parse_formula(formula, expected):
  assert composition.parse_formula(formula) == expected


@pytest.mark.parametrize("formula, message", [
    ("Xy2O", "'Xy'"),
    ("Fe2O3)", "unbalanced"),
    ("(FeO", "unclosed"),
    ("2Fe", "does not follow"),
    ("Fe$", "'$'"),
    ("", "non-empty"),
])
def test_parse_formula_errors_name_the_problem(formula, message):
  with pytest.raises(ValueError, match="Bad formula") as info:
    composition.parse_formula(formula)
  assert message in str(info.value)


def test_encode_sorts_by_fraction_then_atomic_number():
  species, fractions = composition.encode_composition({"Fe": 2, "O": 3}, 4)
  np.testing.assert_array_equal(species, [8, 26, 0, 0])
  np.testing.assert_allclose(fractions, [0.6, 0.4, 0, 0], rtol=1e-7)
  assert species.dtype == np.int32 and fractions.dtype == np.float32
  # Equal fractions: lower Z first, whatever the input order or scale.
  species, _ = composition.encode_composition({"Cl": 2, "Na": 2, "Ba": 1}, 3)
  np.testing.assert_array_equal(species, [11, 17, 56])
  species, fractions = composition.encode_composition({"O": 1 / 3, "Mg": 2 / 6, "Si": 1 / 3}, 3)
  np.testing.assert_array_equal(species, [8, 12, 14])
  assert abs(fractions.sum() - 1) < 1e-6


def test_encode_errors():
  with pytest.raises(ValueError, match="more than max_elements=2"):
    composition.encode_composition({"Li": 1, "Fe": 1, "P": 1, "O": 4}, 2)
  with pytest.raises(ValueError, match="'Qq'"):
    composition.encode_composition({"Qq": 1}, 2)
  with pytest.raises(ValueError, match="non-positive"):
    composition.encode_composition({"Fe": 0, "O": 1}, 2)
