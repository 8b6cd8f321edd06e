r"""Writes a shipped model (inference/pretrained.py) from trained workdirs and their dataset.

  python -m xxact_jax.inference.export --workdir=RUN0,RUN1,RUN2 --data=DATASET \
      --output=xxact_jax/pretrained/xxact-mp36k-v1 --name=xxact-mp36k --version=1 \
      [--dtype=auto|float16|float32] [--measured=INDEX_CSV] [--checkpoint=best|latest] \
      [--command="how the workdirs were trained"] [--check_rows=1024]

The workdirs are the members of an ensemble (e.g. seeds of one recipe): they must share the
model config, targets and max_elements. Each member's parameters (no optimiser state) become a
params-only Orbax checkpoint with the member's config.json and target_stats.json; the training
split of DATASET (the one the workdirs learnt from) becomes the compact reference
(inference/compact_reference.py). `--dtype=auto` stores float16 when, on `--check_rows` rows of
DATASET's test split (and the scans of `--measured`, if given), no class probability of the
ensemble moves by 1e-3 or more and no regression value by 1 meV(/atom) or more against float32;
otherwise it keeps top-level parameter collections (heads, fusion, encoders) in float32, the one
that helps most first, until the predictions are within those bounds ("mixed"), or all of them
(float32). The figures go into MANIFEST.json, with the files' sha256, the command and the check
that the written model, loaded back, predicts as the workdirs do.
"""

import datetime
import json
import os
import shlex
import shutil
import sys
import time

from absl import flags
import numpy as np

from xxact_jax import cli
from xxact_jax import targets as targets_lib
from xxact_jax.inference import calibration
from xxact_jax.inference import compact_reference
from xxact_jax.inference import pretrained
from xxact_jax.inference.errors import InputError

# Half precision is kept only where predictions move by less than this.
PROBABILITY_TOLERANCE = 1e-3
REGRESSION_TOLERANCE = 1e-3        # eV/atom (formation energy) and eV (band gap): 1 meV

DATA_CARD = {
    "name": "mp_36k",
    "source": "Materials Project (https://materialsproject.org), via the XxaCT-NN paper's mp_36k",
    "licence": "CC BY 4.0",
    "citation": ("A. Jain, S. P. Ong, G. Hautier, W. Chen, W. D. Richards, S. Dacek, S. Cholia, "
                 "D. Gunter, D. Skinner, G. Ceder, K. A. Persson, Commentary: The Materials "
                 "Project: A materials genome approach to accelerating materials innovation, "
                 "APL Materials 1, 011002 (2013), doi:10.1063/1.4812323"),
}


FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Trained workdirs, separated by commas.", required=True,
                    flag_values=FLAGS)
flags.DEFINE_string("data", None, "The prepared dataset the workdirs learnt from (its train split "
                    "becomes the reference; its test split checks half precision).",
                    required=True, flag_values=FLAGS)
flags.DEFINE_string("output", None, "New model folder.", required=True, flag_values=FLAGS)
flags.DEFINE_string("name", "xxact-mp36k", "The model's name.", flag_values=FLAGS)
flags.DEFINE_string("version", "1", "The model's version.", flag_values=FLAGS)
flags.DEFINE_enum("dtype", "auto", ("auto", "float16", "float32"), "Storage.", flag_values=FLAGS)
cli.define_checkpoint_flag(FLAGS)
flags.DEFINE_string("measured", None, "Scans' index CSV for the dtype check.", flag_values=FLAGS)
flags.DEFINE_integer("check_rows", 1024, "Test rows of the dtype check.", flag_values=FLAGS)
flags.DEFINE_string("reference_split", "train", "Split of --data made the reference (train, "
                    "test or all).", flag_values=FLAGS)
flags.DEFINE_string("command", "", "The command that trained the workdirs (recorded in the "
                    "manifest).", flag_values=FLAGS)
flags.DEFINE_string("training_config", "", "The --config the members were trained with "
                    "(recorded).", flag_values=FLAGS)
flags.DEFINE_string("training_flags", "", "The further flags they were trained with (recorded).",
                    flag_values=FLAGS)
flags.DEFINE_enum("data_card", "mp_36k", ("mp_36k", "none"), "The data and licence recorded in "
                  "the manifest.", flag_values=FLAGS)
flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.", flag_values=FLAGS)



def check_arrays(data_path: str, rows: int, measured_index: str | None, predictor):
  """Inputs for the dtype check: [(name, (species, fractions, xrd), measured flag)]."""
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  sets = []
  ds = open_dataset(data_path, "test")
  if len(ds) == 0:
    ds = open_dataset(data_path, "train")
  take = np.random.default_rng(0).permutation(len(ds))[:rows]
  batch = ds.read_batch(np.sort(take), ("species", "fractions", "xrd"))
  sets.append((f"{len(take)} rows of {os.path.basename(os.path.normpath(data_path))}",
               (batch["species"], batch["fractions"], batch["xrd"].astype(np.float32)), False))
  if measured_index:
    from xxact_jax import evaluate  # pylint: disable=g-import-not-at-top
    arrays, kept, _ = evaluate.load_inputs(predictor, evaluate.read_index(measured_index))
    if kept:
      sets.append((f"{len(kept)} scans of {measured_index}",
                   tuple(np.stack(c) for c in zip(*arrays)), True))
  return sets


def compare_outputs(a: dict, b: dict, targets) -> dict:
  """Largest change between two predict_arrays outputs: class probabilities, regression
  values (in their units)."""
  out = {}
  for t in targets:
    out[t] = float(np.max(np.abs(np.asarray(a[t], np.float64) - np.asarray(b[t], np.float64))))
    if not targets_lib.get(t).is_regression:
      out[t + "_top1_changed"] = int(np.sum(np.argmax(a[t], -1) != np.argmax(b[t], -1)))
  return out


def _tolerance(target: str) -> float:
  return REGRESSION_TOLERANCE if targets_lib.get(target).is_regression else PROBABILITY_TOLERANCE


def within_tolerance(changes: dict, targets) -> bool:
  return all(changes[t] < _tolerance(t) for t in targets)


def _half(params, keep=()):
  """The parameters as stored (float16, but the collections `keep`) and read back (float32)."""
  return {name: tree if name in keep else pretrained.cast_floats(
      pretrained.cast_floats(tree, np.float16), np.float32) for name, tree in params.items()}


def _excess(changes: dict, targets) -> float:
  """The largest change relative to its tolerance (< 1: within)."""
  return max(changes[t] / _tolerance(t) for t in targets)


def export(workdirs, data_path: str, output: str, name: str = "xxact-mp36k",
           version: str = "1", dtype: str = "auto", checkpoint: str = "best",
           measured: str | None = None, check_rows: int = 1024, reference_split="train",
           command: str = "", data_card: dict | None = None, overwrite: bool = False,
           training: dict | None = None, log=print) -> dict:
  """Writes the model folder; returns its manifest."""
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import ensemble as ensemble_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import model as model_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  workdirs = predictor_lib.split_workdirs(workdirs)
  if os.path.exists(output) and os.listdir(output) and not overwrite:
    raise InputError("exists and is not empty (--overwrite replaces it)", path=output)
  restored = [model_lib.restore(w, checkpoint) for w in workdirs]
  first = restored[0]
  configs = [checkpoints.config_to_json(r.config) for r in restored]
  for c in configs:
    c.pop("seed", None)
  mine = configs[0]
  for w, theirs in zip(workdirs[1:], configs[1:]):
    if theirs != mine:
      differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
      raise InputError(f"an ensemble's members must be trained alike (seed aside); the config "
                       f"differs from {workdirs[0]}'s in {differ}", path=w)
  max_elements = int(first.extra.get("max_elements") or model_lib.DEFAULT_MAX_ELEMENTS)
  # Each member's calibration (inference/calibration.py) travels with it.
  temperatures = [calibration.read_temperatures(w) for w in workdirs]
  members = [model_lib.Model(r.params, r.config, r.target_stats, max_elements, workdir=w,
                             step=r.step, temperatures=t)
             for w, r, t in zip(workdirs, restored, temperatures)]
  targets = members[0].targets

  # Half precision, measured on the ensemble's predictions (what the shipped model answers).
  log("checking half precision ...")
  sets = check_arrays(data_path, check_rows, measured,
                      predictor_lib.Predictor(members[0], reference=None, indexing=False))
  reference_outputs = [[m.predict_arrays(*arrays, measured=flag) for _, arrays, flag in sets]
                       for m in members]
  expected = [ensemble_lib.average_outputs([outs[k] for outs in reference_outputs], targets)
              for k in range(len(sets))]

  def changes_of(keep: tuple) -> dict:
    """Largest change of the ensemble's outputs over the check inputs with every float
    parameter in float16 but those of the top-level collections `keep`."""
    halves = [model_lib.Model(_half(r.params, keep), r.config, r.target_stats, max_elements,
                              temperatures=t)
              for r, t in zip(restored, temperatures)]
    worst = {}
    for k, (_, arrays, flag) in enumerate(sets):
      out = ensemble_lib.average_outputs(
          [h.predict_arrays(*arrays, measured=flag) for h in halves], targets)
      for key, value in compare_outputs(expected[k], out, targets).items():
        worst[key] = max(worst.get(key, 0), value)
    return worst

  half_check = {"inputs": [s[0] for s in sets],
                "tolerance": {"probability": PROBABILITY_TOLERANCE,
                              "regression": REGRESSION_TOLERANCE}, "tried": []}
  keep32 = ()
  if dtype == "float32":
    keep32 = tuple(first.params)
  elif dtype in ("auto", "float16"):
    changes = changes_of(())
    half_check["tried"].append({"float32": [], "changes": changes})
    if dtype == "auto" and not within_tolerance(changes, targets):
      # Keep collections in float32, one at a time, the one that helps most first, until the
      # predictions are within tolerance; all of them (float32) if nothing less suffices.
      keep32 = tuple(first.params)
      kept = ()
      for _ in range(len(first.params) - 1):
        trials = [(kept + (c,), changes_of(kept + (c,))) for c in first.params if c not in kept]
        for k, ch in trials:
          half_check["tried"].append({"float32": list(k), "changes": ch})
        kept, changes = min(trials, key=lambda t: _excess(t[1], targets))
        if within_tolerance(changes, targets):
          keep32 = kept
          break
  stored = ("float32" if set(keep32) == set(first.params) else
            "float16" if not keep32 else "mixed")
  half_check["float32_collections"] = sorted(keep32)
  # What the stored precision changes (none in float32), and whether that is within tolerance.
  half_check["stored_changes"] = None if stored == "float32" else changes_of(keep32)
  half_check["within_tolerance"] = (stored == "float32"
                                    or within_tolerance(half_check["stored_changes"], targets))
  log(f"storing {stored} (float32: {sorted(keep32) or 'none'}); tried "
      f"{json.dumps(half_check['tried'])}")

  temporary = output.rstrip("/") + ".partial"
  shutil.rmtree(temporary, ignore_errors=True)
  os.makedirs(temporary)
  member_entries = []
  for i, (w, r) in enumerate(zip(workdirs, restored)):
    member_dir = os.path.join(temporary, "members", str(i))
    os.makedirs(member_dir)
    pretrained.save_params(os.path.join(member_dir, "params"), r.params, keep32)
    for file_name, value in (("config.json", checkpoints.config_to_json(r.config)),
                             ("target_stats.json", r.target_stats)):
      with open(os.path.join(member_dir, file_name), "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    if os.path.isfile(os.path.join(w, calibration.CALIBRATION_FILE)):
      shutil.copy(os.path.join(w, calibration.CALIBRATION_FILE), member_dir)
    count = sum(int(np.size(x)) for x in jax.tree.leaves(r.params))
    member_entries.append({"path": f"members/{i}", "seed": r.config.get("seed"),
                           "step": int(r.step), "workdir": os.path.abspath(w),
                           "parameters": count, "train_seconds": _train_seconds(w)})
  for file_name in ("config.json", "target_stats.json"):
    shutil.copy(os.path.join(temporary, "members", "0", file_name), temporary)

  log(f"compact reference of {data_path} ({reference_split}) ...")
  start = time.perf_counter()
  arrays = compact_reference.build(
      data_path, None if reference_split == "all" else reference_split,
      progress=lambda done, total: log(f"  {done}/{total} rows") if done % 8192 < 1024 or
      done == total else None)
  compact_reference.save(arrays, os.path.join(temporary, compact_reference.FILE_NAME))
  reference_meta = json.loads(str(arrays["meta"]))
  log(f"  {reference_meta['rows']} rows, {len(arrays['peak_position'])} peaks in "
      f"{time.perf_counter() - start:.0f} s")

  manifest = {
      "format": pretrained.FORMAT, "format_version": pretrained.FORMAT_VERSION,
      "name": name, "version": str(version),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "package_version": pretrained.installed_version(),
      "command": command,
      "training": dict(training or {}),
      "export_command": "python -m xxact_jax.inference.export " + shlex.join(sys.argv[1:])
      if sys.argv and sys.argv[0].endswith("export.py") else "",
      "model": members[0].model_name, "targets": list(targets), "max_elements": max_elements,
      "params_dtype": stored, "float32_collections": sorted(keep32),
      "members": member_entries,
      "parameters": member_entries[0]["parameters"],
      "data": dict(data_card or {}, path=os.path.abspath(data_path),
                   train_rows=int(_split_rows(data_path, "train")),
                   test_rows=int(_split_rows(data_path, "test"))),
      "reference": {"path": compact_reference.FILE_NAME, "rows": reference_meta["rows"],
                    "peaks": int(len(arrays["peak_position"])), "split": reference_split,
                    "format_version": compact_reference.FORMAT_VERSION},
      "half_precision_check": half_check,
  }
  manifest["files"] = pretrained.file_table(temporary)
  manifest["bytes"] = sum(e["bytes"] for e in manifest["files"].values())
  with open(os.path.join(temporary, pretrained.MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)

  # The written model, loaded back, must predict as the workdirs do (up to the stored dtype).
  loaded = pretrained.load(temporary, reference="none", indexing=False)
  check = {}
  for k, (label, inputs, flag) in enumerate(sets):
    expected = ensemble_lib.average_outputs([outputs[k] for outputs in reference_outputs],
                                             targets)
    check[label] = compare_outputs(expected, loaded.predict_arrays(*inputs, measured=flag),
                                   targets)
  manifest["export_check"] = check
  with open(os.path.join(temporary, pretrained.MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
  if os.path.exists(output):
    shutil.rmtree(output)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  os.replace(temporary, output)
  log(f"wrote {output}: {manifest['bytes'] / 1e6:.2f} MB, {len(members)} member(s), "
      f"{stored}; loaded back: {json.dumps(check)}")
  return manifest


def _train_seconds(workdir: str):
  """The run's wall time, where the training script recorded it (WORKDIR/done)."""
  try:
    with open(os.path.join(workdir, "done")) as f:
      return int(f.read().strip())
  except (OSError, ValueError):
    return None


def _split_rows(data_path: str, split: str) -> int:
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  try:
    return len(open_dataset(data_path, split))
  except (OSError, ValueError, KeyError):
    return 0


@cli.input_errors
def main(argv=None) -> int:
  cli.parse(FLAGS, argv, __doc__)
  export(FLAGS.workdir, FLAGS.data, FLAGS.output, FLAGS.name, FLAGS.version, FLAGS.dtype,
         FLAGS.checkpoint, FLAGS.measured, FLAGS.check_rows, FLAGS.reference_split, FLAGS.command,
         DATA_CARD if FLAGS.data_card == "mp_36k" else None, FLAGS.overwrite,
         {"config": FLAGS.training_config, "flags": FLAGS.training_flags.split()},
         log=lambda m: print(m, file=sys.stderr, flush=True))
  return 0


if __name__ == "__main__":
  cli.run(main)
