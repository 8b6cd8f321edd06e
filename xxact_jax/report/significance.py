r"""How sure an accuracy on a few labelled scans is, and whether two models differ on the same ones.

  python -m xxact_jax.report.significance A/predictions.jsonl B/predictions.jsonl \
      [--target=crystal_system]
  python -m xxact_jax.report.significance A_0 B_0 A_1 B_1 ...   # pooled over pairs (e.g. seeds)
  python -m xxact_jax.report.significance A B --route=model   # the scans the model answers alone

On 100 measured scans one scan is one point of accuracy: a Wilson interval says how far the true
rate may lie, and an exact McNemar test (the scans one model gets right and the other wrong;
a two-sided binomial test on those) whether two models evaluated on the same scans differ. The
inputs are `python -m xxact_jax.evaluate` predictions files; scans are paired by their id. The
last stdout line is the result as JSON. Several pairs (the runs of two settings with seeds 0, 1,
...) pool their discordant scans into one McNemar test; each pair's comparison is kept under
"pairs". `--route` keeps the scans whose `route` (evaluate --measured's default path) is the one
named in both files: `model` for the scans neither the reference nor an indexed lattice answers.
"""

import json
import sys

from absl import flags
from scipy import stats

from xxact_jax import cli
from xxact_jax.inference.errors import InputError

def wilson_interval(correct: int, total: int) -> tuple[float, float]:
  """Wilson score interval (95 %) of a proportion; (0, 1) for no trials."""
  if total <= 0:
    return 0.0, 1.0
  interval = stats.binomtest(int(correct), int(total)).proportion_ci(0.95, method="wilson")
  return max(0.0, float(interval.low)), min(1.0, float(interval.high))


def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value from the discordant pairs: `only_a` items right by A alone,
  `only_b` by B alone (a binomial(n, 1/2) test; 1.0 when there are none)."""
  if only_a + only_b == 0:
    return 1.0
  return float(stats.binomtest(int(only_a), int(only_a + only_b), 0.5).pvalue)


def _outcomes(path: str, target: str, route: str | None = None) -> dict[str, bool]:
  outcomes = {}
  try:
    with open(path) as f:
      for line_number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
          label, predicted = record["label"][target], record[target]
          key = record["id"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise InputError(f"{path}:{line_number}: not a prediction with an id, {target!r} and "
                           f"label.{target} ({type(e).__name__}: {e})") from None
        if label is not None and (route is None or record.get("route") == route):
          outcomes[key] = predicted == label
  except OSError as e:
    raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
  return outcomes


def compare(path_a: str, path_b: str, target: str = "crystal_system",
            route: str | None = None) -> dict:
  """Accuracies with Wilson intervals and the McNemar test of A against B on their common ids
  (those on `route` only, when given)."""
  a, b = _outcomes(path_a, target, route), _outcomes(path_b, target, route)
  common = sorted(set(a) & set(b))
  if not common:
    raise InputError(f"{path_a} and {path_b} share no labelled predictions of {target!r}"
                     + (f" on route {route!r}." if route else "."))
  only_a = sum(a[k] and not b[k] for k in common)
  only_b = sum(b[k] and not a[k] for k in common)
  result = {"target": target, "route": route, "paired": len(common),
            "only_in_a": len(set(a) - set(b)), "only_in_b": len(set(b) - set(a))}
  for name, outcome in (("a", a), ("b", b)):
    correct = sum(outcome[k] for k in common)
    low, high = wilson_interval(correct, len(common))
    result[f"{name}_accuracy"] = correct / len(common)
    result[f"{name}_accuracy_ci95"] = [low, high]
  result.update({"right_by_a_alone": only_a, "right_by_b_alone": only_b,
                 "mcnemar_p": mcnemar_exact(only_a, only_b)})
  return result


FLAGS = flags.FlagValues()
flags.DEFINE_string("target", "crystal_system", "The label compared.", flag_values=FLAGS)
flags.DEFINE_enum("route", None, ("reference", "indexing", "model"), "Only the scans this route "
                  "answers on the default path.", flag_values=FLAGS)


@cli.input_errors
def main(argv=None) -> int:
  files = cli.parse(FLAGS, argv, __doc__, positional=True) or cli.fail(
      "give predictions.jsonl of model A, then of model B; more pairs are pooled")
  if len(files) % 2:
    raise InputError(f"predictions files come in pairs (A B), got {len(files)}")
  pairs = list(zip(files[::2], files[1::2]))
  if len(pairs) > 1:   # each pair compared, and one McNemar test of their discordant scans
    each = [compare(a, b, FLAGS.target, FLAGS.route) for a, b in pairs]
    only_a = sum(r["right_by_a_alone"] for r in each)
    only_b = sum(r["right_by_b_alone"] for r in each)
    result = {"target": FLAGS.target, "route": FLAGS.route, "pairs": each,
              "paired": sum(r["paired"] for r in each), "right_by_a_alone": only_a,
              "right_by_b_alone": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b)}
    print(f"{len(pairs)} pairs, {result['paired']} paired scans: right by A alone "
          f"{result['right_by_a_alone']}, by B alone {result['right_by_b_alone']}; pooled "
          f"McNemar p = {result['mcnemar_p']:.3g}", file=sys.stderr)
  else:
    result = compare(*pairs[0], FLAGS.target, FLAGS.route)
    print(f"A {result['a_accuracy']:.1%} [{result['a_accuracy_ci95'][0]:.1%}, "
          f"{result['a_accuracy_ci95'][1]:.1%}]  B {result['b_accuracy']:.1%} "
          f"[{result['b_accuracy_ci95'][0]:.1%}, {result['b_accuracy_ci95'][1]:.1%}]  on "
          f"{result['paired']} scans; right by A alone {result['right_by_a_alone']}, by B alone "
          f"{result['right_by_b_alone']}; McNemar p = {result['mcnemar_p']:.3g}", file=sys.stderr)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  cli.run(main)
