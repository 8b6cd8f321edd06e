r"""Scores a trained workdir on labelled measured scans or on any prepared dataset.

  python -m xxact_jax.evaluate --measured=index.csv --output=OUT   # the shipped model
  python -m xxact_jax.evaluate --workdir=DIR --measured=index.csv --output=OUT \
      [--checkpoint=best|latest] [--background=none|snip] [--[no]strip_ka2]
      [--[no]redraw_peaks] [--reference=auto|none|DATASET] [--[no]indexing]
  python -m xxact_jax.evaluate --workdir=DIR --data=DATASET --output=OUT \
      [--split=test|train|all] [--checkpoint=best|latest]

With --data, the checkpoint is evaluated on a split of a prepared dataset (not necessarily the one
it was trained on: `python -m xxact_jax.prepare --test_fraction=1` makes a file a test set) by the
training-time evaluation itself (sharded over the devices like training), so `metrics.json` has
the training-time metrics under their names without the `eval/` prefix
(`formation_energy_per_atom_mae_meV`, `band_gap_mae`, `crystal_system_accuracy` and per class,
`spacegroup_number_accuracy`, `loss/<target>` in the run's own loss); `predictions.jsonl` has one
line per row (index within the split, material id, labels, predictions), and the confusion matrix, per-class accuracy and
parity plots are PNGs. The last line of stdout is the metrics JSON.

With --measured:
The index CSV names one scan per row: `file` (relative to the CSV), `formula`, and
`wavelength_angstrom` (empty: the file's own, else Cu Kα, said on stderr and in the record;
predict --input's `xrd_file` and `wavelength` are read as well), with labels `crystal_system`
(a name) and/or `spacegroup_number`; `id` is optional (the layout of ../shared/data/measured_xrd_dev).
Scans go through the predict path (Bragg's-law conversion to Cu Kα, resampling onto the 5–90°
grid, background removal and Kα2 stripping as `xxact_jax.load().predict` does by default, or
as the flags say) and are predicted in batches. OUT receives `metrics.json`
(the training-time names: `crystal_system_accuracy`, per class
`crystal_system_accuracy/<class>`, top-5, space-group accuracy, and the majority-class rate of the
labels), `predictions.jsonl` (one line per scan), and `confusion_crystal_system.png`. A scan that
cannot be read is reported with its file and reason, and left out of the metrics. The last line
of stdout is the metrics JSON.

Without --workdir, --measured scores the model shipped with the package (docs/MODELS.md), with
its compact reference of its training rows.

A scan whose composition the reference dataset holds (--reference, default: the training split the
checkpoint learnt from) is answered by its best-matching row, as `xxact_jax.load().predict` does
(inference/reference.py); `metrics.json` then also has the model's own accuracy
(`model_crystal_system_accuracy`) and `reference` (rows matched, rows declined below the
similarity threshold, accuracy on the matched ones of the reference and of the model). --reference=none scores the model alone. The other scans' answers are
restricted to the systems of the lattice that indexes them, where one does
(inference/indexing.py); `indexing` in `metrics.json` counts them and scores them with and
without the restriction, and `lattice_allows_label` is how often the lattice allows the label.
--noindexing turns it off; with both off, the model answers alone.
"""

import dataclasses
import os
import sys
import time
import warnings

from absl import flags
import numpy as np

from xxact_jax import cli
from xxact_jax import constants
from xxact_jax import progress as progress_lib
from xxact_jax import targets as targets_lib
from xxact_jax.inference import answers
from xxact_jax.inference import identification
from xxact_jax.inference import model as model_lib
from xxact_jax.inference import outputs
from xxact_jax.inference import reference as reference_lib
from xxact_jax.inference import resample
from xxact_jax.inference import wavelengths
from xxact_jax.inference.errors import InputError
from xxact_jax.report import calibration as calibration_report
from xxact_jax.report import metrics as report_metrics
from xxact_jax.report import significance

LABEL_COLUMNS = ("crystal_system", "spacegroup_number")


FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", "pretrained", "Trained workdir; with --measured, several separated "
                    "by commas are scored as an ensemble (their probabilities averaged); default: "
                    "the model shipped with the package (--measured only).", flag_values=FLAGS)
flags.DEFINE_string("measured", None, "Index CSV of measured scans.", flag_values=FLAGS)
flags.DEFINE_string("data", None, "A prepared dataset (xxact_jax.prepare).", flag_values=FLAGS)
flags.mark_flags_as_mutual_exclusive(["measured", "data"], required=True, flag_values=FLAGS)
flags.DEFINE_enum("split", "test", ("test", "train", "all"), "With --data.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "Results folder.", required=True, flag_values=FLAGS)
cli.define_prediction_flags(FLAGS)
flags.DEFINE_boolean("calibrate", False, "With --data: fit the temperatures of the model's class "
                     "probabilities on the split's patterns, augmented as measured scans, and "
                     "write WORKDIR/calibration.json (inference/calibration.py).",
                     flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 0, "Default: 256 with --measured, the run's eval batch with "
                     "--data.", flag_values=FLAGS)


def read_index(path: str) -> list[dict]:
  """Rows of the index CSV with `path` resolved; errors name the CSV line and column.

  A bad label stops the run (the scores would be wrong); a row with a byte that is not UTF-8
  comes back with its reason under "error", and is reported and left out like an unreadable scan.
  """
  from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise InputError("no such index file", path=path)
  base = os.path.dirname(os.path.abspath(path))
  # predict --input's names are read too: one index serves both.
  aliases = {name: alias for alias, name in inputs.SCAN_COLUMN_ALIASES.items()}
  header, table = inputs.read_csv_table(path, aliases)
  missing = [c for c in ("file", "formula") if c not in header]
  if missing:
    raise InputError(f"missing column(s) {missing}; has {header}", path=path)
  if not any(c in header for c in LABEL_COLUMNS):
    raise InputError(f"no label column: expected one of {list(LABEL_COLUMNS)}", path=path)
  rows = []
  for line, row in table:
    row, undecodable = inputs.decode_row(row)
    entry = {"id": row.get("id") or row["file"], "line": line, "index": path,
             "path": os.path.join(base, row["file"] or "")}
    if undecodable:
      column, problem = undecodable
      rows.append(dict(entry, error=str(InputError(f"is not valid UTF-8 ({problem})", path=path,
                                                   line=line, field=column))))
      continue
    label = (row.get("crystal_system") or "").strip().lower()
    if label and label not in constants.CRYSTAL_SYSTEMS:
      raise InputError(f"unknown crystal system {label!r}; known: "
                       f"{list(constants.CRYSTAL_SYSTEMS)}", path=path, line=line,
                       field="crystal_system")
    sg = (row.get("spacegroup_number") or "").strip()
    # ASCII digits only: str.isdigit() also holds for "²", which int() refuses.
    if sg and not (sg.isascii() and sg.isdigit() and 1 <= int(sg) <= constants.NUM_SPACE_GROUPS):
      raise InputError(f"space group {sg!r} is not in 1–230", path=path, line=line,
                       field="spacegroup_number")
    wavelength = (row.get("wavelength_angstrom") or "").strip()
    if wavelength:
      try:
        wavelength = wavelengths.parse_wavelength(wavelength)
      except ValueError as e:
        raise InputError(str(e), path=path, line=line, field="wavelength_angstrom") from None
    rows.append(dict(entry, formula=(row["formula"] or "").strip(), wavelength=wavelength or None,
                     crystal_system=label or None, spacegroup_number=int(sg) if sg else None))
  if not rows:
    raise InputError("no rows", path=path)
  return rows


def load_inputs(predictor, rows):
  """(model arrays of the readable rows, their rows, [(row, reason)] of the others), each scan
  prepared by `predictor.prepare` with the predictor's preprocessing. Each kept row (the caller's
  dict) is given its parsed scan as "scan", so the identification does not read the file again."""
  arrays, kept, failed = [], [], []
  progress = progress_lib.Progress(len(rows), "evaluate: read", unit="scans")
  for i, row in enumerate(rows):
    progress.update(i)
    if row.get("error"):
      failed.append((row, row["error"]))
      continue
    try:
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", resample.PartialCoverageWarning)
        warnings.simplefilter("always", resample.WavelengthAssumedWarning)
        prepared, scan = predictor.prepare_and_parse(row["formula"], row["path"],
                                                     row["wavelength"])
      for w in caught:
        if issubclass(w.category, resample.WavelengthAssumedWarning):
          print(f"warning: {w.message}", file=sys.stderr)
          row["wavelength_assumed_angstrom"] = wavelengths.CU_KA
        else:
          warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except InputError as e:
      failed.append((row, str(e)))
    except ValueError as e:   # the formula (shared parser): this row alone, as in predict
      failed.append((row, str(InputError(str(e), path=row.get("index"), line=row["line"],
                                         field="formula"))))
    else:
      arrays.append(prepared)
      row["scan"] = scan
      kept.append(row)
  progress.update(len(rows), len(failed))
  return arrays, kept, failed


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, name: str,
                           class_names=None) -> dict:
  """Top-1 accuracy with its 95 % Wilson interval, top-5 accuracy, per-class accuracy and the
  majority-class rate of `labels` (class indices; -1 = unlabelled)."""
  sel = labels >= 0
  m = {f"{name}_count": int(sel.sum())}
  if not sel.any():
    return m
  p, y = probabilities[sel], labels[sel]
  top = np.argsort(-p, axis=-1)
  correct = top[:, 0] == y
  m[f"{name}_accuracy"] = float(np.mean(correct))
  m[f"{name}_accuracy_ci95"] = list(significance.wilson_interval(int(correct.sum()), len(y)))
  m[f"{name}_top5_accuracy"] = float(np.mean((top[:, :5] == y[:, None]).any(-1)))
  m[f"{name}_majority_rate"] = int(np.bincount(y).max()) / len(y)
  if class_names is not None:   # the classes the labels hold
    recall = report_metrics.per_class_accuracy(
        report_metrics.confusion_matrix(y, top[:, 0], len(class_names)))
    m.update({f"{name}_accuracy/{c}": float(r) for c, r in zip(class_names, recall)
              if not np.isnan(r)})
  return m


def _mean(values: np.ndarray, sel: np.ndarray) -> float | None:
  """The mean of `values` where `sel` holds; None where it holds nowhere."""
  return float(values[sel].mean()) if sel.any() else None


def route_metrics(routes, sel, hit, model_hit, confidence) -> dict:
  """Per route (who answered each scan) and over all scans, of the labelled scans `sel`: scans,
  accuracy, the model's own accuracy, mean confidence and expected calibration error."""
  by_route = {}
  for name in identification.ROUTES + ("all",):
    on = sel & (routes == name) if name != "all" else sel
    by_route[name] = {
        "scans": int(on.sum()), "accuracy": _mean(hit, on),
        "model_accuracy": _mean(model_hit, on), "mean_confidence": _mean(confidence, on),
        "expected_calibration_error": calibration_report.expected_calibration_error(
            confidence[on], hit[on])}
  return by_route


def route_table(by_route: dict) -> str:
  """route_metrics as a few lines for the terminal."""
  pct = lambda v: "–" if v is None else f"{100 * v:.1f} %"
  lines = ["route       scans  accuracy  model alone  confidence  ECE"]
  for name, m in by_route.items():
    ece = m["expected_calibration_error"]
    lines.append(f"{name:<10} {m['scans']:>6}  {pct(m['accuracy']):>8}  "
                 f"{pct(m['model_accuracy']):>11}  {pct(m['mean_confidence']):>10}  "
                 f"{'–' if ece is None else f'{ece:.3f}'}")
  return "\n".join(lines)


def evaluate_measured(workdir, index_csv, output, checkpoint="best",
                      preprocessing: resample.Preprocessing | None = None,
                      batch_size=256, reference="auto", indexing=True,
                      min_confidence: float = 0.0) -> dict:
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  outputs.check_output_dir(output)   # before the work, not after it
  rows = read_index(index_csv)
  predictor = predictor_lib.load(workdir, checkpoint, batch_size=batch_size,
                                 preprocessing=preprocessing, reference=reference,
                                 indexing=indexing)
  arrays, kept, failed = load_inputs(predictor, rows)
  for row, reason in failed:
    print(f"skipped: {reason}", file=sys.stderr)
  if not kept:
    raise InputError("none of the scans could be read", path=index_csv)
  species, fractions, xrd = (np.stack(c) for c in zip(*arrays))
  out = predictor.predict_arrays(species, fractions, xrd, measured=True)
  bad = outputs.non_finite_rows(out, predictor.targets)
  if bad.any():   # scored neither right nor wrong, and never written as NaN
    for i in np.flatnonzero(bad):
      reason = f"{kept[i]['path']}: the model's prediction is not finite (NaN or Inf)"
      print(f"skipped: {reason}", file=sys.stderr)
      failed.append((kept[i], reason))
    kept = [row for row, b in zip(kept, bad) if not b]
    if not kept:
      raise InputError("no scan got a finite prediction", path=index_csv)
    out = {k: v[~bad] for k, v in out.items()}
    species, fractions, xrd = species[~bad], fractions[~bad], xrd[~bad]
  model_out = {k: v.copy() for k, v in out.items()}
  identified = []
  progress = progress_lib.Progress(len(kept), "evaluate: reference and indexing", unit="scans")
  for row in kept:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", resample.PartialCoverageWarning)
      identified.append(predictor.identify(row["formula"], row["scan"], row["wavelength"]))
    progress.advance(1)
  for i, found in enumerate(identified):
    found.apply(out, i)
  metrics = {"workdir": ",".join(os.path.abspath(w) for w in predictor.workdirs),
             "ensemble": len(predictor.ensemble.models), "index": os.path.abspath(index_csv),
             "checkpoint": checkpoint, "step": predictor.step,
             **dataclasses.asdict(predictor.preprocessing),   # background, strip_ka2, ...
             "scans": len(rows), "scans_evaluated": len(kept), "scans_failed": len(failed),
             "reference": None, "indexing": None}
  routes = np.array([d.route for d in identified])
  cs_labels = np.array([constants.CRYSTAL_SYSTEMS.index(r["crystal_system"])
                        if r["crystal_system"] else -1 for r in kept])
  space_group = targets_lib.get("spacegroup_number")
  sg_labels = space_group.class_index(
      np.array([r["spacegroup_number"] or targets_lib.MISSING_CLASS for r in kept], np.int64))
  os.makedirs(output, exist_ok=True)
  if "crystal_system" in out:
    metrics.update(classification_metrics(out["crystal_system"], cs_labels, "crystal_system",
                                           constants.CRYSTAL_SYSTEMS))
    sel = cs_labels >= 0
    model_hit = model_out["crystal_system"].argmax(-1) == cs_labels
    hit = out["crystal_system"].argmax(-1) == cs_labels
    if predictor.reference is not None or predictor.indexing:
      metrics["model_crystal_system_accuracy"] = _mean(model_hit, sel)
    if predictor.indexing:
      # The scans whose answer the lattice restricted: indexed, and no reference match.
      indexed = (routes == "indexing") & sel
      metrics["indexing"] = {
          "indexed": int(indexed.sum()),
          "crystal_system_accuracy_indexed": _mean(hit, indexed),
          "model_crystal_system_accuracy_indexed": _mean(model_hit, indexed),
          "lattice_allows_label": _mean(np.array([
              d.lattice is not None and cs_labels[i] in d.lattice.crystal_systems
              for i, d in enumerate(identified)]), indexed)}
    if predictor.reference is not None:
      # A row below the similarity threshold does not answer (reference.MIN_SIMILARITY).
      matched = np.array([d.answered for d in identified]) & sel
      declined = np.array([d.match is not None and not d.answered for d in identified]) & sel
      metrics["reference"] = {
          "path": predictor.reference.path, "split": predictor.reference.split,
          "rows": len(predictor.reference), "matched": int(matched.sum()),
          "declined": int(declined.sum()), "min_similarity": reference_lib.MIN_SIMILARITY,
          "crystal_system_accuracy_matched": _mean(hit, matched),
          "model_crystal_system_accuracy_matched": _mean(model_hit, matched)}
    if sel.any():
      from xxact_jax.report import plots  # pylint: disable=g-import-not-at-top
      names, predicted = constants.CRYSTAL_SYSTEMS, out["crystal_system"][sel].argmax(-1)
      plots.plot_confusion(
          report_metrics.confusion_matrix(cs_labels[sel], predicted, len(names)), names,
          os.path.join(output, "confusion_crystal_system.png"),
          title=f"crystal system, {int(sel.sum())} measured scans, accuracy "
                f"{np.mean(cs_labels[sel] == predicted):.1%}")
      # Who answered each scan, how well, and whether its probability means what it says.
      confidence = out["crystal_system"].max(-1)
      by_route = route_metrics(routes, sel, hit, model_hit, confidence)
      metrics["routes"] = by_route
      metrics["expected_calibration_error"] = by_route["all"]["expected_calibration_error"]
      metrics["accuracy_surest_half"] = calibration_report.accuracy_at_coverage(
          confidence[sel], hit[sel], 0.5)
      metrics["selective"] = calibration_report.selective_summary(confidence[sel], hit[sel],
                                                                  min_confidence)
      metrics["temperatures"] = dict(predictor.temperatures)
      if any(m.temperatures for m in predictor.ensemble.models):
        # The model's own answers with and without the temperatures: what calibration changed.
        raw = predictor.uncalibrated().predict_arrays(species, fractions, xrd, measured=True)
        metrics["model_calibration"] = {
            name: {"mean_confidence": float(p[sel].max(-1).mean()),
                   "expected_calibration_error": calibration_report.expected_calibration_error(
                       p[sel].max(-1), model_hit[sel])}
            for name, p in (("calibrated", model_out["crystal_system"]),
                            ("uncalibrated", raw["crystal_system"]))}
      calibration_report.risk_coverage_png(
          {"all scans": (confidence[sel], hit[sel]),
           **{f"{r} route": (confidence[sel][routes[sel] == r], hit[sel][routes[sel] == r])
              for r in identification.ROUTES}},
          os.path.join(output, "risk_coverage.png"),
          title="crystal system, measured scans")
      print(route_table(by_route))
  if "spacegroup_number" in out:
    metrics.update(classification_metrics(out["spacegroup_number"], sg_labels,
                                          "spacegroup_number"))
  with open(os.path.join(output, "predictions.jsonl"), "w") as f:
    for i, (row, found) in enumerate(zip(kept, identified)):
      record = {"id": row["id"], "file": row["path"], "formula": row["formula"],
                "label": {k: row[k] for k in LABEL_COLUMNS}}
      if "wavelength_assumed_angstrom" in row:
        record["wavelength_assumed_angstrom"] = row["wavelength_assumed_angstrom"]
      record["route"] = str(routes[i])
      if "crystal_system" in out:
        record["crystal_system"] = constants.CRYSTAL_SYSTEMS[int(out["crystal_system"][i].argmax())]
        record["crystal_system_probabilities"] = {
            n: float(p) for n, p in zip(constants.CRYSTAL_SYSTEMS, out["crystal_system"][i])}
        if out["crystal_system"][i].max() < min_confidence:
          record["crystal_system_answer"] = answers.UNDETERMINED
      if "spacegroup_number" in out:
        record["spacegroup_top5"] = [int(space_group.label_of(j)) for j in
                                     np.argsort(-out["spacegroup_number"][i])[:5]]
      for t in constants.REGRESSION_TARGETS:
        if t in out:
          record[t] = float(out[t][i])
      if found.lattice is not None:
        record["indexing"] = answers.lattice_json(found.lattice)
      elif found.indexed:
        record["indexing_note"] = answers.NONE_FOUND
      if found.match is not None or found.lattice is not None:
        if found.match is not None:
          record["reference"] = answers.match_json(found.match)
        if "crystal_system" in out:
          record["model_crystal_system"] = constants.CRYSTAL_SYSTEMS[
              int(model_out["crystal_system"][i].argmax())]
      f.write(outputs.dumps(record) + "\n")
    for row, reason in failed:
      f.write(outputs.dumps({"id": row["id"], "file": row["path"], "error": reason}) + "\n")
  with open(os.path.join(output, "metrics.json"), "w") as f:
    f.write(outputs.dumps(metrics, indent=1))
  return metrics


def evaluate_dataset(workdir, data_path, output, split="test", checkpoint="best",
                     batch_size=0) -> dict:
  """The training-time evaluation of a checkpoint on a split of a prepared dataset."""
  import jax  # pylint: disable=g-import-not-at-top
  from xxact_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import eval_loop as eval_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  outputs.check_output_dir(output)   # before the work, not after it
  restored = model_lib.restore(workdir, checkpoint)
  try:
    dataset = data_lib.open_dataset(data_path, split=None if split == "all" else split)
  except (OSError, ValueError, KeyError) as e:
    raise InputError(f"cannot open split {split!r} ({e})", path=data_path) from None
  if len(dataset) == 0:
    raise InputError(f"split {split!r} is empty", path=data_path)
  config = restored.config
  targets = tuple(config.targets)
  mesh = sharding_lib.make_mesh()
  size = batch_size or int(config.eval_batch_size)
  size = -(-size // mesh.size) * mesh.size          # a multiple of the devices
  config = config.copy_and_resolve_references()
  config.eval_batch_size = size
  model = build_model(config.model)
  eval_step = jax.jit(step_lib.make_eval_step(model, config, restored.target_stats),
                      in_shardings=(sharding_lib.replicated(mesh),
                                    sharding_lib.batch_sharding(mesh)))
  params = jax.device_put(restored.params, sharding_lib.replicated(mesh))
  start = time.perf_counter()
  print(f"evaluating {len(dataset)} rows of {data_path} ({split}) in batches of {size}",
        file=sys.stderr, flush=True)
  metrics, predictions = eval_lib.evaluate(eval_step, params, dataset, config, mesh,
                                           return_predictions=True)
  seconds = time.perf_counter() - start
  print(f"evaluated {len(dataset)} rows in {seconds:.1f} s ({len(dataset) / seconds:.0f}/s)",
        file=sys.stderr, flush=True)
  result = {"workdir": os.path.abspath(workdir), "data": os.path.abspath(data_path),
            "split": split, "checkpoint": checkpoint, "step": restored.step,
            "model": config.model.name, "regression_loss": config.regression_loss}
  result.update({k.removeprefix("eval/"): v for k, v in metrics.items()})
  if jax.process_index() == 0:
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "predictions.jsonl")
    order = np.argsort(predictions["index"], kind="stable")
    index = predictions["index"][order]
    ids = dataset.material_ids(index)
    with open(path + ".tmp", "w") as f:
      for j, i in enumerate(order):
        record = {"index": int(index[j]), "material_id": ids[j]}
        for t in targets:
          label, pred = predictions[f"label/{t}"][i], predictions[f"pred/{t}"][i]
          if t == "crystal_system":
            label, pred = (constants.CRYSTAL_SYSTEMS[int(v)] if 0 <= int(v) < 7 else None
                           for v in (label, pred))
          elif t in constants.CLASSIFICATION_TARGETS:
            label, pred = int(label), int(pred)
          else:
            label = float(label) if np.isfinite(label) else None
            pred = float(pred) if np.isfinite(pred) else None
          record[t] = {"label": label, "prediction": pred}
        f.write(outputs.dumps(record) + "\n")
    os.replace(path + ".tmp", path)
    _dataset_figures(predictions, targets, output)
    with open(os.path.join(output, "metrics.json"), "w") as f:
      f.write(outputs.dumps(result, indent=1))
  return result


def _dataset_figures(predictions, targets, output):
  from xxact_jax.report import plots  # pylint: disable=g-import-not-at-top
  for t in targets:
    label, pred = predictions[f"label/{t}"], predictions[f"pred/{t}"]
    if t == "crystal_system":
      matrix = report_metrics.confusion_matrix(label, pred, len(constants.CRYSTAL_SYSTEMS))
      plots.plot_confusion(matrix, constants.CRYSTAL_SYSTEMS,
                           os.path.join(output, "confusion_crystal_system.png"))
      plots.plot_per_class_accuracy(report_metrics.per_class_accuracy(matrix),
                                    constants.CRYSTAL_SYSTEMS, matrix.sum(axis=1),
                                    os.path.join(output, "accuracy_per_crystal_system.png"))
    elif t in constants.REGRESSION_TARGETS:
      keep = np.isfinite(label)
      scores = report_metrics.regression_scores(label[keep], pred[keep])
      plots.plot_parity(label[keep], pred[keep], t, constants.TARGET_UNITS[t], scores,
                        os.path.join(output, f"parity_{t}.png"))


def main(argv=None):
  cli.parse(FLAGS, argv, __doc__)
  args = FLAGS
  try:
    if args.calibrate:
      if not args.data:
        raise InputError("--calibrate fits on a prepared dataset's patterns: give --data",
                         path=args.workdir)
      from xxact_jax.inference import calibration  # pylint: disable=g-import-not-at-top
      from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
      os.makedirs(args.output, exist_ok=True)
      metrics = calibration.calibrate(
          predictor_lib.load(args.workdir, args.checkpoint, reference="none", indexing=False),
          args.data, args.split)
      with open(os.path.join(args.output, "calibration.json"), "w") as f:
        f.write(outputs.dumps(metrics, indent=1))
    elif args.data:
      if args.workdir == "pretrained":
        raise InputError("--data scores a trained workdir: give --workdir (the shipped model's "
                         "figures on mp_36k: experiments/pretrained_metrics.py)", path=args.data)
      if "," in args.workdir:
        raise InputError("--data scores one workdir; an ensemble is scored with --measured",
                         path=args.workdir)
      metrics = evaluate_dataset(args.workdir, args.data, args.output, args.split,
                                 args.checkpoint, args.batch_size)
    else:
      metrics = evaluate_measured(
          args.workdir, args.measured, args.output, args.checkpoint,
          resample.from_arguments(args),
          args.batch_size or 256, args.reference, args.indexing, args.min_confidence)
  except InputError as e:
    sys.exit(f"error: {e}")
  print(f"evaluate: wrote {', '.join(sorted(os.listdir(args.output)))} to "
        f"{os.path.abspath(args.output)}", file=sys.stderr)
  print(outputs.dumps(metrics))


if __name__ == "__main__":
  cli.run(main)
