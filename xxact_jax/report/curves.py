"""Learning curves from a workdir's metrics.jsonl."""

import json
import math
import os

import numpy as np

from xxact_jax.inference.errors import InputError


def read_metrics(workdir: str) -> list[dict]:
  """The JSON records of `workdir/metrics.jsonl`, in file order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise InputError("no metrics.jsonl (is this a training workdir?)", path=path)
  records = []
  with open(path) as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg})", path=path, line=line_number) from None
      if not isinstance(record, dict) or "step" not in record:
        raise InputError("record has no 'step'", path=path, line=line_number)
      records.append(record)
  return records


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one metric, sorted by step; the last value logged at a step wins."""
  by_step = {}
  for record in records:
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
      by_step[int(record["step"])] = float(value)
  steps = np.array(sorted(by_step), dtype=np.int64)
  return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def metric_keys(records: list[dict]) -> list[str]:
  """Numeric metric names that occur in the records, in first-seen order."""
  keys = {}
  for record in records:
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
        keys.setdefault(key, None)
  return list(keys)


def lower_is_better(key: str) -> bool:
  """Accuracy-like metrics rise; errors and losses fall."""
  name = key.rsplit("/", 1)[-1].lower()
  return not any(word in name for word in ("accuracy", "acc", "r2", "silhouette", "auc"))
