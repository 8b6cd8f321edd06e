"""Wilson intervals and the exact McNemar test (report/significance.py)."""

import json

import pytest

from xxact_jax.report import significance


def test_wilson_interval_matches_scipy_and_known_values():
  stats = pytest.importorskip("scipy.stats")
  for correct, total in ((52, 100), (0, 10), (10, 10), (3, 7), (420, 1000)):
    expected = stats.binomtest(correct, total).proportion_ci(0.95, method="wilson")
    got = significance.wilson_interval(correct, total)
    assert got == pytest.approx((expected.low, expected.high), abs=1e-9), (correct, total)
  low, high = significance.wilson_interval(52, 100)
  assert (round(low, 3), round(high, 3)) == (0.423, 0.615)
  assert significance.wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_is_the_two_sided_binomial_test_of_the_discordant_pairs():
  stats = pytest.importorskip("scipy.stats")
  for only_a, only_b in ((11, 8), (42, 8), (0, 6), (5, 5), (1, 0)):
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert significance.mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9)
  assert significance.mcnemar_exact(0, 0) == 1.0


def _write(path, outcomes):
  with open(path, "w") as f:
    for scan_id, (label, predicted) in outcomes.items():
      f.write(json.dumps({"id": scan_id, "label": {"crystal_system": label},
                          "crystal_system": predicted}) + "\n")


def test_compare_pairs_scans_by_id_and_names_a_bad_line(tmp_path, capsys):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  # s1 right by both, s2 by A only, s3 by B only, s4 by A only, s5 in A only, s6 unlabelled.
  _write(a, {"s1": ("cubic", "cubic"), "s2": ("monoclinic", "monoclinic"),
             "s3": ("trigonal", "hexagonal"), "s4": ("cubic", "cubic"),
             "s5": ("cubic", "cubic"), "s6": (None, "cubic")})
  _write(b, {"s4": ("cubic", "tetragonal"), "s3": ("trigonal", "trigonal"),
             "s2": ("monoclinic", "triclinic"), "s1": ("cubic", "cubic"), "s6": (None, "cubic")})
  assert significance.main([str(a), str(b)]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["paired"] == 4 and result["only_in_a"] == 1 and result["only_in_b"] == 0
  assert result["a_accuracy"] == 0.75 and result["b_accuracy"] == 0.5
  assert result["right_by_a_alone"] == 2 and result["right_by_b_alone"] == 1
  assert result["mcnemar_p"] == pytest.approx(1.0)
  assert result["a_accuracy_ci95"] == pytest.approx(list(significance.wilson_interval(3, 4)))
  with open(b, "a") as f:
    f.write("{not json\n")
  assert significance.main([str(a), str(b)]) == 2
  assert f"{b}:6" in capsys.readouterr().err


def test_pairs_of_runs_pool_their_discordant_scans(tmp_path, capsys):
  a0, b0, a1, b1 = (tmp_path / f"{n}.jsonl" for n in ("a0", "b0", "a1", "b1"))
  _write(a0, {"s1": ("cubic", "cubic"), "s2": ("monoclinic", "monoclinic")})
  _write(b0, {"s1": ("cubic", "tetragonal"), "s2": ("monoclinic", "monoclinic")})
  _write(a1, {"s1": ("cubic", "cubic"), "s2": ("monoclinic", "triclinic")})
  _write(b1, {"s1": ("cubic", "tetragonal"), "s2": ("monoclinic", "monoclinic")})
  assert significance.main([str(a0), str(b0), str(a1), str(b1)]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert (result["right_by_a_alone"], result["right_by_b_alone"], result["paired"]) == (2, 1, 4)
  assert result["mcnemar_p"] == significance.mcnemar_exact(2, 1)
  assert [r["right_by_a_alone"] for r in result["pairs"]] == [1, 1]
  assert significance.main([str(a0), str(b0), str(a1)]) == 2
  assert "pairs" in capsys.readouterr().err


def test_route_keeps_the_scans_that_route_answers(tmp_path, capsys):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  records = {"s1": ("model", "cubic", "cubic"), "s2": ("model", "cubic", "trigonal"),
             "s3": ("reference", "cubic", "cubic")}
  for path, flip in ((a, False), (b, True)):
    with open(path, "w") as f:
      for scan_id, (route, label, predicted) in records.items():
        answer = ("tetragonal" if scan_id == "s1" else "cubic") if flip else predicted
        f.write(json.dumps({"id": scan_id, "route": route, "label": {"crystal_system": label},
                            "crystal_system": answer}) + "\n")
  assert significance.main([str(a), str(b), "--route=model"]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["paired"] == 2 and result["route"] == "model"
  assert (result["right_by_a_alone"], result["right_by_b_alone"]) == (1, 1)
  assert significance.main([str(a), str(b), "--route=indexing"]) == 2
  assert "route 'indexing'" in capsys.readouterr().err
