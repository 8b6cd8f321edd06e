r"""Predictions from a trained workdir for measured patterns or CIFs.

  python -m xxact_jax.predict --workdir=DIR --formula=Fe2O3 --xrd=scan.xy [--wavelength=Mo] \
      [--background=none|snip] [--[no-]strip_ka2]
  python -m xxact_jax.predict --workdir=DIR --cif=structure.cif
  python -m xxact_jax.predict --workdir=DIR --input=samples.csv [--output=predictions.jsonl]

The CSV has a header with either `formula` and `xrd_file` columns, or a `cif`
column (paths relative to the CSV's folder); optional `id` and `wavelength`
columns. Output: one JSON object per sample (JSON Lines), with formation
energy (eV/atom), band gap (eV), crystal-system probabilities and the top-5
space groups, for the heads the checkpoint has. Every input is read and
checked before anything is predicted or written. Measured scans are prepared
as `xxact_jax.load().predict` prepares them (inference/resample.py
`Preprocessing`); the flags change background removal and Kα2 stripping.
"""

import argparse
import csv
import json
import os
import sys
import warnings

import numpy as np

from xxact_jax.inference.errors import InputError


def _parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m xxact_jax.predict", description=__doc__.split("\n\n")[0],
      epilog="Wavelength: Å, or an anode name (Cu, Mo, Co, Fe, Cr, Ag; Kα, or e.g. CuKa1).")
  parser.add_argument("--workdir", required=True, help="trained workdir")
  parser.add_argument("--which", choices=("best", "latest"), default="best",
                      help="checkpoint to restore")
  parser.add_argument("--formula", help="chemical formula, e.g. Fe2O3")
  parser.add_argument("--xrd", help="measured pattern: .xy .xye .csv .txt .dat or .xrdml")
  parser.add_argument("--wavelength",
                      help="source wavelength of --xrd (default: from the file, else Cu Kα)")
  parser.add_argument("--cif", help="CIF file; the pattern is simulated as in the dataset")
  parser.add_argument("--input", help="CSV with formula,xrd_file or cif columns")
  parser.add_argument("--output", help="write JSON Lines here instead of stdout")
  parser.add_argument("--batch_size", type=int, default=256)
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  default = resample.Preprocessing()
  parser.add_argument("--background", choices=resample.BACKGROUND_METHODS,
                      default=default.background,
                      help="background removal of measured scans")
  parser.add_argument("--strip_ka2", action=argparse.BooleanOptionalAction,
                      default=default.strip_ka2,
                      help="remove the Kα2 companion reflections of measured scans (Rachinger)")
  parser.add_argument("--min_coverage_deg", type=float, default=default.min_coverage_deg,
                      help="refuse scans covering less of 5–90° (Cu Kα scale); 0 accepts any")
  args = parser.parse_args(argv)
  modes = [bool(args.formula or args.xrd), bool(args.cif), bool(args.input)]
  if sum(modes) != 1:
    parser.error("give exactly one of: --formula/--xrd, --cif, --input")
  return args


class Sample:
  """One input row: what the user gave, and later the model arrays."""

  def __init__(self, source: dict, formula=None, xrd=None, wavelength=None, cif=None,
               cif_text=None):
    self.source = source
    self.formula, self.xrd, self.wavelength = formula, xrd, wavelength
    self.cif, self.cif_text = cif, cif_text


def samples_from_csv(path: str, default_wavelength=None) -> list[Sample]:
  """Rows of the --input CSV; errors name the CSV line and column."""
  if not os.path.isfile(path):
    raise InputError("no such file", path=path)
  base = os.path.dirname(os.path.abspath(path))
  resolve = lambda p: p if os.path.isabs(p) else os.path.join(base, p)
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = set(reader.fieldnames or ())
    if not ({"formula", "xrd_file"} <= columns or "cif" in columns):
      raise InputError(f"needs columns formula and xrd_file, or cif; has {sorted(columns)}",
                       path=path, line=1)
    samples = []
    for row in reader:
      line = reader.line_num
      source = {"input": path, "line": line}
      if row.get("id"):
        source["id"] = row["id"]
      wavelength = (row.get("wavelength") or "").strip() or default_wavelength
      cif = (row.get("cif") or "").strip()
      if cif:
        inline = "data_" in cif and "\n" in cif
        source["cif"] = "<inline>" if inline else cif
        samples.append(Sample(source, cif=None if inline else resolve(cif),
                              cif_text=cif if inline else None))
        continue
      formula, xrd = (row.get("formula") or "").strip(), (row.get("xrd_file") or "").strip()
      for name, value in (("formula", formula), ("xrd_file", xrd)):
        if not value:
          raise InputError("is empty", path=path, line=line, field=name)
      source.update(formula=formula, xrd_file=xrd)
      samples.append(Sample(source, formula=formula, xrd=resolve(xrd), wavelength=wavelength))
  if not samples:
    raise InputError("has no data rows", path=path)
  return samples


def prepare_all(predictor, samples: list[Sample]):
  """Model arrays of every sample; the first bad one raises, naming its file and line."""
  from xxact_jax.inference import inputs  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import wavelengths  # pylint: disable=g-import-not-at-top
  rows = []
  for sample in samples:
    where = sample.source.get("input")
    line = sample.source.get("line")
    try:
      if sample.cif or sample.cif_text:
        features = (inputs.featurize_cif(sample.cif, predictor.max_elements) if sample.cif
                    else inputs.featurize_cif_text(sample.cif_text, predictor.max_elements,
                                                   source=f"{where} line {line}"))
        sample.source["formula"] = features["formula"]
        rows.append((features["species"], features["fractions"],
                     inputs.as_stored(features["xrd"])))
      else:
        if sample.wavelength is not None:
          try:
            wavelengths.parse_wavelength(sample.wavelength)
          except ValueError as e:
            raise InputError(str(e), path=where, line=line, field="wavelength") from None
        with warnings.catch_warnings(record=True) as caught:
          warnings.simplefilter("always")
          rows.append(predictor.prepare(sample.formula, sample.xrd, sample.wavelength))
        for w in caught:
          print(f"warning: {w.message}", file=sys.stderr)
          sample.source.setdefault("warnings", []).append(str(w.message))
    except InputError:
      raise
    except ValueError as e:   # what is left: the formula (shared composition parser)
      raise InputError(str(e), path=where, line=line, field="formula") from None
  return tuple(np.stack(column) for column in zip(*rows))


def run(argv=None) -> list[dict]:
  args = _parse_args(argv)
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  if args.input:
    samples = samples_from_csv(args.input, args.wavelength)
  elif args.cif:
    samples = [Sample({"cif": args.cif}, cif=args.cif)]
  else:
    # Unimodal checkpoints need only one of the two; the predictor says which is missing.
    source = {k: v for k, v in (("formula", args.formula), ("xrd_file", args.xrd)) if v}
    samples = [Sample(source, formula=args.formula,
                      xrd=args.xrd, wavelength=args.wavelength)]
  from xxact_jax.inference import resample  # pylint: disable=g-import-not-at-top
  predictor = predictor_lib.load(
      args.workdir, args.which, args.batch_size,
      preprocessing=resample.Preprocessing(args.background, args.strip_ka2,
                                           args.min_coverage_deg))
  arrays = prepare_all(predictor, samples)
  outputs = predictor.predict_arrays(*arrays)
  results = []
  for i, sample in enumerate(samples):
    record = dict(sample.source)
    record.update(predictor_lib.format_prediction({k: v[i] for k, v in outputs.items()},
                                                  predictor.targets))
    results.append(record)
  text = "".join(json.dumps(r) + "\n" for r in results)
  if args.output:
    temporary = args.output + ".tmp"
    with open(temporary, "w") as f:
      f.write(text)
    os.replace(temporary, args.output)
  else:
    sys.stdout.write(text)
  return results


def main(argv=None) -> int:
  try:
    run(argv)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
