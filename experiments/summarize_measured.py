r"""Tables the runs of experiments/measured.sh: measured accuracy (all scans and by source), the
simulated test split at the evaluated checkpoint, and the majority-class rate.

  python experiments/summarize_measured.py OUT

Reads OUT/summary.jsonl (one `evaluate` metrics line per run and preprocessing option, with
`run` and `preprocessing` added), each run's OUT/<run>/metrics.jsonl and the predictions under
OUT/eval/; writes OUT/summary.md and prints it.
"""

import collections
import json
import os
import sys


def source_of(scan_id: str) -> str:
  """The dev set's ids start with their source: rruff_, iucr_, crystalyze_."""
  return scan_id.split("_", 1)[0]


def simulated_accuracy(workdir: str, step: int) -> float | None:
  """eval/crystal_system_accuracy of `workdir` at `step` (the checkpoint evaluated)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  found = None
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record.get("step") == step and "eval/crystal_system_accuracy" in record:
        found = record["eval/crystal_system_accuracy"]
  return found


def accuracy_by_source(predictions_path: str) -> dict[str, tuple[int, int]]:
  counts = collections.defaultdict(lambda: [0, 0])
  with open(predictions_path) as f:
    for line in f:
      record = json.loads(line)
      label = record.get("label", {}).get("crystal_system")
      if "error" in record or not label:
        continue
      for key in ("all", source_of(record["id"])):
        counts[key][0] += record["crystal_system"] == label
        counts[key][1] += 1
  return {k: tuple(v) for k, v in counts.items()}


def main(out: str) -> str:
  rows = [json.loads(line) for line in open(os.path.join(out, "summary.jsonl")) if line.strip()]
  sources = ("rruff", "iucr", "crystalyze")
  header = ("| run | preprocessing | measured, all | " + " | ".join(sources)
            + " | top-5 | simulated test | majority |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for m in rows:
    predictions = os.path.join(out, "eval", m["run"], m["preprocessing"].replace(",", "_"),
                               "predictions.jsonl")
    by_source = accuracy_by_source(predictions)
    cells = []
    for key in sources:
      right, total = by_source.get(key, (0, 0))
      cells.append(f"{right / total:.1%} ({total})" if total else "–")
    simulated = simulated_accuracy(os.path.join(out, m["run"]), m["step"])
    lines.append(
        f"| {m['run']} | {m['preprocessing']} | **{m['crystal_system_accuracy']:.1%}** | "
        + " | ".join(cells)
        + f" | {m['crystal_system_top5_accuracy']:.1%} | "
        + (f"{simulated:.1%}" if simulated is not None else "–")
        + f" | {m['crystal_system_majority_rate']:.1%} |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
  print(text)
  return text


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  main(sys.argv[1])
