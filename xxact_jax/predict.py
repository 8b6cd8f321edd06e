r"""Predictions from the shipped model or a trained workdir for measured patterns or CIFs.

  python -m xxact_jax.predict --formula=CaCO3 --xrd=scan.xy     # the model shipped with xxact_jax
  python -m xxact_jax.predict --workdir=DIR --formula=Fe2O3 --xrd=scan.xy [--wavelength=Mo] \
      [--background=none|snip] [--[no]strip_ka2] [--[no]redraw_peaks] \
      [--reference=auto|none|DATASET] [--[no]indexing]
  python -m xxact_jax.predict --workdir=DIR --cif=structure.cif
  python -m xxact_jax.predict --workdir=DIR --input=samples.csv [--output=predictions.jsonl]

Without --workdir (or with --workdir=pretrained) the model shipped with the package is used
(inference/pretrained.py; docs/MODELS.md), with its compact reference of its training rows as
--reference=auto.

The CSV has a header with either `formula` and `xrd_file` columns, or a `cif`
column (paths relative to the CSV's folder); optional `id` and `wavelength`
columns. `evaluate --measured`'s names `file` and `wavelength_angstrom` are read
too, so one index serves both. Output: one JSON object per sample (JSON Lines), with formation
energy (eV/atom), band gap (eV), crystal-system probabilities and the top-5
space groups, for the heads the checkpoint has. Measured scans are prepared
as `xxact_jax.load().predict` prepares them (inference/resample.py
`Preprocessing`); the flags change background removal and Kα2 stripping.
A measured scan whose composition the reference dataset holds (--reference, default: the
training split the checkpoint learnt from, if it is on disk) gets the crystal system and space
group of its best-matching row when the match is close enough (reference.MIN_SIMILARITY; else
"reference" says "answered": false and the model answers), with "reference" naming it and the
model's own answer kept as "model_prediction" (inference/reference.py); --reference=none leaves
the model alone.
For the other scans, when a cubic, tetragonal, hexagonal or orthorhombic lattice indexes the
scan's lines (inference/indexing.py), the model's crystal-system probabilities and space groups are
restricted to the systems that lattice allows, with "indexing" giving the cell and figure of
merit and the model's own answer kept the same way; --noindexing turns this off.

Formulas are refused with a zero amount ("Fe0O3") or an element the model was
not trained on (beyond Pu, Z 94: `inference/inputs.py` `SUPPORTED_ELEMENTS`).

With --input, every CSV row is predicted that can be: the output holds one
object per data row in CSV order, each with `input` (the CSV) and `line` (its
line number, the header is line 1), and either the predictions or, for a row
that could not be used, `"error": "<reason>"` and no predictions. Each bad row
is also printed on stderr (`error: rows.csv, line 7: ...`), followed by one
summary line (`error: 2 of 1000 rows failed (lines 7, 12); 998 predicted`).

Exit status: 0 when everything was predicted; 1 when some CSV rows failed (the
output is still written, good rows included); 2 when nothing could be run (a
bad single input, an unreadable CSV or header, a workdir without checkpoint):
one `error: ...` line on stderr and no output file.
"""

import os
import sys
import warnings

from absl import flags
import numpy as np

from xxact_jax import cli
from xxact_jax.inference import outputs as output_checks
from xxact_jax.inference.errors import InputError


FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", "pretrained", "Trained workdir; several separated by commas "
                    "predict as an ensemble (their probabilities and values averaged); default: "
                    "the model shipped with the package (docs/MODELS.md).", flag_values=FLAGS)
flags.DEFINE_string("formula", None, "Chemical formula, e.g. Fe2O3.", flag_values=FLAGS)
flags.DEFINE_string("xrd", None, "Measured scan: .xy .xye .csv .txt .dat .xrdml", flag_values=FLAGS)
flags.DEFINE_string("wavelength", None, "Source wavelength of --xrd: Å, or an anode name (Cu, "
                    "Mo, Co, Fe, Cr, Ag; Kα, or e.g. CuKa1); default: from the file, else Cu Kα.",
                    flag_values=FLAGS)
flags.DEFINE_string("cif", None, "CIF file, simulated as in the dataset.", flag_values=FLAGS)
flags.DEFINE_string("input", None, "CSV with formula,xrd_file or cif columns.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "Write JSON Lines here instead of stdout.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 256, "Samples per forward pass.", flag_values=FLAGS)
cli.define_prediction_flags(FLAGS)
flags.register_multi_flags_validator(
    ["formula", "xrd", "cif", "input"],
    lambda f: sum(map(bool, (f["formula"] or f["xrd"], f["cif"], f["input"]))) == 1,
    "give exactly one of: --formula/--xrd, --cif, --input", flag_values=FLAGS)


class Sample:
  """One input row: what the user gave, and later the model arrays."""

  def __init__(self, source: dict, formula=None, xrd=None, wavelength=None, cif=None,
               cif_text=None, error=None):
    self.source = source
    self.formula, self.xrd, self.wavelength = formula, xrd, wavelength
    self.cif, self.cif_text = cif, cif_text
    self.error = error      # InputError found while reading the row (keep_bad_rows)
    self.scan = None        # the pattern (file parsed once) for the model and the identification


def samples_from_csv(path: str, default_wavelength=None,
                     keep_bad_rows: bool = False) -> list[Sample]:
  """Rows of the --input CSV; errors name the CSV line and column.

  A row with an empty required field raises, or with `keep_bad_rows` comes back as a Sample
  whose `error` says why. A missing file, a bad header or unparsable CSV always raises.
  """
  from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
  header, table = inputs.read_csv_table(path, inputs.SCAN_COLUMN_ALIASES)
  base = os.path.dirname(os.path.abspath(path))
  resolve = lambda p: p if os.path.isabs(p) else os.path.join(base, p)
  columns = set(header)
  if not ({"formula", "xrd_file"} <= columns or "cif" in columns):
    raise InputError(f"needs columns formula and xrd_file, or cif; has {sorted(columns)}",
                     path=path, line=1)
  samples = [_sample_of_row(row, line, path, resolve, default_wavelength, keep_bad_rows)
             for line, row in table]
  if not samples:
    raise InputError("has no data rows", path=path)
  return samples


def _sample_of_row(row, line, path, resolve, default_wavelength, keep_bad_rows) -> Sample:
  from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
  source = {"input": path, "line": line}
  row, undecodable = inputs.decode_row(row)
  if row.get("id"):
    source["id"] = row["id"]
  if undecodable:
    column, problem = undecodable
    error = InputError(f"is not valid UTF-8 ({problem})", path=path, line=line, field=column)
    if not keep_bad_rows:
      raise error
    return Sample(source, error=error)
  wavelength = (row.get("wavelength") or "").strip() or default_wavelength
  cif = (row.get("cif") or "").strip()
  if cif:
    inline = "data_" in cif and "\n" in cif
    source["cif"] = "<inline>" if inline else cif
    return Sample(source, cif=None if inline else resolve(cif),
                  cif_text=cif if inline else None)
  formula, xrd = (row.get("formula") or "").strip(), (row.get("xrd_file") or "").strip()
  source.update({k: v for k, v in (("formula", formula), ("xrd_file", xrd)) if v})
  for name, value in (("formula", formula), ("xrd_file", xrd)):
    if not value:
      error = InputError("is empty", path=path, line=line, field=name)
      if not keep_bad_rows:
        raise error
      return Sample(source, error=error)
  return Sample(source, formula=formula, xrd=resolve(xrd), wavelength=wavelength)


def prepare_sample(predictor, sample: Sample):
  """(species, fractions, xrd) of one sample; InputError naming its file, CSV line and field."""
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import wavelengths  # pylint: disable=g-import-not-at-top
  where, line = sample.source.get("input"), sample.source.get("line")
  if sample.error is not None:
    raise sample.error
  try:
    if sample.cif or sample.cif_text:
      cif = predictor.read_cif(sample.cif or sample.cif_text, source=f"{where} line {line}")
      sample.source["formula"] = cif["formula"]
      return cif["arrays"]
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      row, sample.scan = predictor.prepare_and_parse(sample.formula, sample.xrd,
                                                     sample.wavelength)
    for w in caught:
      print(f"warning: {w.message}", file=sys.stderr)
      sample.source.setdefault("warnings", []).append(str(w.message))
      if issubclass(w.category, resample.WavelengthAssumedWarning):
        sample.source["wavelength_assumed_angstrom"] = wavelengths.CU_KA
    return row
  except InputError as e:
    if e.path is None and where is not None:   # e.g. "the model needs a composition"
      raise InputError(e.problem, path=where, line=line, field=e.field) from None
    raise
  except ValueError as e:   # what is left: the formula (shared composition parser)
    raise InputError(str(e), path=where, line=line, field="formula") from None
  except (OSError, EOFError) as e:   # an unreadable or truncated (compressed) file
    raise InputError(f"cannot read ({e})", path=sample.cif or sample.xrd) from None


def _row_error(sample: Sample, error: Exception) -> str:
  """The reason a CSV row failed, led by its CSV line unless the error already names it."""
  where, line = sample.source.get("input"), sample.source.get("line")
  if isinstance(error, InputError) and error.path == where and error.line == line:
    return str(error)
  return f"{where}, line {line}: {error}"


def run(argv=None) -> list[dict]:
  """Predicts and writes the records; returns them (failed CSV rows carry "error")."""
  cli.parse(FLAGS, argv, __doc__)
  args = FLAGS
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  if args.output:
    # Before any work: a missing folder must not cost a whole batch's predictions at the end.
    output_checks.check_output_file(args.output)
  if args.input:
    samples = samples_from_csv(args.input, args.wavelength, keep_bad_rows=True)
  elif args.cif:
    samples = [Sample({"cif": args.cif}, cif=args.cif)]
  else:
    # Unimodal checkpoints need only one of the two; the predictor says which is missing.
    source = {k: v for k, v in (("formula", args.formula), ("xrd_file", args.xrd)) if v}
    samples = [Sample(source, formula=args.formula,
                      xrd=args.xrd, wavelength=args.wavelength)]
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  predictor = predictor_lib.load(
      args.workdir, args.checkpoint, args.batch_size,
      preprocessing=resample.from_arguments(args),
      reference=args.reference, indexing=args.indexing)
  rows, errors = {}, {}
  for i, sample in enumerate(samples):
    try:
      rows[i] = prepare_sample(predictor, sample)
    except Exception as e:  # pylint: disable=broad-except  (a reader's unforeseen failure too)
      if not args.input:   # a single input: its error stops the run
        raise
      # One bad CSV row must not cost the others their predictions: record it and go on.
      errors[i] = _row_error(sample, e if isinstance(e, InputError)
                             else f"{type(e).__name__}: {e}")
  outputs = {}
  if rows:
    arrays = tuple(np.stack(column) for column in zip(*rows.values()))
    # A CIF's pattern is simulated as in the dataset (no scan); every other pattern is a scan.
    measured = [samples[i].scan is not None for i in rows]
    predicted = predictor.predict_arrays(*arrays, measured=measured)
    bad = output_checks.non_finite_rows(predicted, predictor.targets)
    outputs = {i: {k: v[n] for k, v in predicted.items()} for n, i in enumerate(rows)
               if not bad[n]}
    for n, i in enumerate(rows):
      if bad[n]:   # never written as NaN: an error, like any row that cannot be predicted
        error = InputError("the model's prediction is not finite (NaN or Inf); the input is "
                           "outside what it can read", path=samples[i].xrd or samples[i].cif)
        if not args.input:
          raise error
        errors[i] = _row_error(samples[i], error)
  from xxact_jax.inference import answers  # pylint: disable=g-import-not-at-top
  results = []
  for i, sample in enumerate(samples):
    record = dict(sample.source)
    if i in errors:
      record["error"] = errors[i]
    else:
      identification = None
      if sample.xrd and (predictor.reference is not None or predictor.indexing):
        try:
          identification = predictor.identify(sample.formula, sample.scan, sample.wavelength)
        except InputError as e:   # a scan only the lookup reads (a formula-only model)
          record["reference_error"] = str(e)
      record.update(answers.identified_prediction(outputs[i], predictor.targets, identification))
      if identification is not None and identification.indexed and not identification.lattice:
        record["indexing_note"] = answers.NONE_FOUND   # said, so silence is not "not tried"
      answers.apply_min_confidence(record, predictor.targets, args.min_confidence)
    results.append(record)
  text = "".join(output_checks.dumps(r) + "\n" for r in results)
  if args.output:
    temporary = args.output + ".tmp"
    with open(temporary, "w") as f:
      f.write(text)
    os.replace(temporary, args.output)
  else:
    sys.stdout.write(text)
  errors = dict(sorted(errors.items()))
  for shown, message in enumerate(errors.values()):
    if shown == 20:
      print(f"error: ... {len(errors) - shown} more failed rows, each with an \"error\" in "
            f"{args.output or 'the output'}", file=sys.stderr)
      break
    print(f"error: {message}", file=sys.stderr)
  if errors:
    lines = [str(samples[i].source["line"]) for i in errors]
    listed = ", ".join(lines[:10]) + (", ..." if len(lines) > 10 else "")
    print(f"error: {len(errors)} of {len(samples)} rows failed (lines {listed}); "
          f"{len(samples) - len(errors)} predicted", file=sys.stderr)
  return results


@cli.input_errors
def main(argv=None) -> int:
  return 1 if any("error" in r for r in run(argv)) else 0


if __name__ == "__main__":
  cli.run(main)
