"""Checks of where the CLIs will write, made before any work, so a long run is not lost to a
missing folder or a file where a folder belongs at the very end."""

import json
import os

import numpy as np

from xxact_jax.inference.errors import InputError


def check_output_file(path: str, flag: str = "--output") -> None:
  """Raises InputError unless `path` can be written as a file (its folder exists and is
  writable, and it is not a folder itself)."""
  if os.path.isdir(path):
    raise InputError(f"{flag}: is a folder; give a file name", path=path)
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise InputError(f"{flag}: its folder {folder} does not exist", path=path)
  if not os.access(folder, os.W_OK | os.X_OK):
    raise InputError(f"{flag}: its folder {folder} is not writable", path=path)
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise InputError(f"{flag}: exists and is not writable", path=path)


def check_output_dir(path: str, flag: str = "--output") -> None:
  """Raises InputError unless `path` is a writable folder or can be made one (the nearest
  existing ancestor is a writable folder)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise InputError(f"{flag}: exists and is not a folder; give a folder for the results",
                     path=path)
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise InputError(f"{flag}: {existing} is a file, so the folder cannot be made",
                     path=path)
  if not os.access(existing, os.W_OK | os.X_OK):
    raise InputError(f"{flag}: {existing} is not writable", path=path)


def non_finite_rows(outputs: dict, targets) -> np.ndarray:
  """bool [N]: the rows of batched predictions (Predictor.predict_arrays) holding NaN or Inf in
  any target. Such a row is reported as an error, never written: JSON has no NaN."""
  values = [np.asarray(outputs[t]) for t in targets]
  return np.logical_or.reduce([~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
                               for v in values])


def json_ready(value):
  """`value` with every non-finite float replaced by None, so that json.dumps writes valid JSON
  (its default writes a bare NaN); a last defence behind the checks that refuse such rows."""
  if isinstance(value, dict):
    return {k: json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  if isinstance(value, (float, np.floating)) and not np.isfinite(value):
    return None
  return value


def dumps(value, **kwargs) -> str:
  """json.dumps of json_ready(value), refusing NaN should any slip through."""
  return json.dumps(json_ready(value), allow_nan=False, **kwargs)
