"""The target registry: label offsets, missing labels, standardisation, one definition."""

import numpy as np
import pytest

from xxact_jax import constants
from xxact_jax import targets


def test_space_group_labels_map_to_class_indices_and_back():
  sg = targets.get("spacegroup_number")
  labels = np.array([1, 230, -1, 0, 225])
  index = sg.class_index(labels)
  np.testing.assert_array_equal(index, [0, 229, -1, -1, 224])
  np.testing.assert_array_equal(sg.is_labelled(labels), [True, True, False, False, True])
  assert sg.label_of(224) == 225 and sg.head_width == 230 and not sg.is_regression


def test_crystal_system_has_named_classes_and_no_offset():
  cs = targets.get("crystal_system")
  np.testing.assert_array_equal(cs.class_index(np.array([0, 6, -1])), [0, 6, -1])
  assert cs.class_names[6] == "cubic" and cs.head_width == 7


def test_regression_targets_standardise_and_back():
  fe = targets.get("formation_energy_per_atom")
  stats = {"mean": -1.5, "std": 0.8}
  y = np.array([-3.0, 0.25])
  np.testing.assert_allclose(fe.destandardise(fe.standardise(y, stats), stats), y)
  np.testing.assert_allclose(fe.standardise(y, stats), (y + 1.5) / 0.8)
  np.testing.assert_array_equal(fe.is_labelled(np.array([0.1, np.nan])), [True, False])
  assert fe.head_width == 1 and fe.unit == "eV/atom"
  # A band gap is never predicted negative; a formation energy may be.
  gap = targets.get("band_gap")
  np.testing.assert_array_equal(gap.destandardise(np.array([-2.0, 1.0]), {"mean": 1.0, "std": 1.0}),
                                [0.0, 2.0])
  np.testing.assert_array_equal(fe.destandardise(np.array([-2.0]), stats), [-3.1])


def test_unknown_target_is_a_clear_error_and_lists_are_derived_from_the_registry():
  with pytest.raises(ValueError, match="Unknown target 'bandgap'.*band_gap"):
    targets.get("bandgap")
  assert targets.check_names(["band_gap"]) == ("band_gap",)
  with pytest.raises(ValueError, match=r"Unknown target\(s\) \['gap'\] in X; known: .*band_gap"):
    targets.check_names(["band_gap", "gap"], " in X")
  assert constants.ALL_TARGETS == tuple(targets.REGISTRY)
  assert constants.CLASSIFICATION_TARGETS == {"crystal_system": 7, "spacegroup_number": 230}
  assert set(constants.REGRESSION_TARGETS) == {"formation_energy_per_atom", "band_gap"}
