r"""Evaluation report of a trained workdir: figures and summary.md in DIR/report/.

  python -m xxact_jax.report --workdir=DIR [--split=test] [--checkpoint=best]

Writes a 2-D PCA of the model's embedding coloured by crystal system (paper
Fig. 2), silhouette scores per crystal system (Table 5), accuracy per crystal
system (Table 4), a confusion matrix, parity plots for each regression head,
learning curves from metrics.jsonl, and summary.md. The report is assembled
in a staging folder and moved into place only when complete.
"""

import os
import shutil
import sys
import tempfile

from absl import flags
import numpy as np

from xxact_jax import cli
from xxact_jax import constants
from xxact_jax import progress as progress_lib
from xxact_jax.inference.errors import InputError

FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "The trained workdir.", required=True, flag_values=FLAGS)
cli.define_checkpoint_flag(FLAGS)
flags.DEFINE_string("split", None, "Default: the run's eval split.", flag_values=FLAGS)
flags.DEFINE_string("data_path", None, "Prepared dataset (default: the run's).", flag_values=FLAGS)
flags.DEFINE_integer("max_samples", 0, "Only the first N rows (0 = all).", flag_values=FLAGS)
flags.DEFINE_integer("max_embedding_samples", 10_000, "PCA and silhouette use a seeded subset of "
                     "at most this many rows.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 256, "Samples per forward pass.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Default: WORKDIR/report.", flag_values=FLAGS)


def run_split(predictor, dataset, max_samples: int = 0) -> tuple[dict, dict]:
  """(outputs, labels) over a dataset split, in row order, with progress on stderr."""
  count = len(dataset) if max_samples <= 0 else min(max_samples, len(dataset))
  if count == 0:
    raise InputError(f"split {dataset.split!r} is empty", path=dataset.path)
  progress = progress_lib.Progress(count, "report: predicting")
  label_keys = constants.REGRESSION_TARGETS + tuple(constants.CLASSIFICATION_TARGETS)
  outputs, labels = [], []
  for start in range(0, count, predictor.batch_size):
    batch = dataset.read_batch(np.arange(start, min(start + predictor.batch_size, count)))
    outputs.append(predictor.predict_arrays(batch["species"], batch["fractions"],
                                            batch["xrd"].astype(np.float32)))
    labels.append({k: batch[k] for k in label_keys if k in batch})
    progress.update(min(start + predictor.batch_size, count))
  join = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return join(outputs), join(labels)


def build(args) -> str:
  from xxact_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.report import analysis  # pylint: disable=g-import-not-at-top
  from xxact_jax.report import curves  # pylint: disable=g-import-not-at-top

  predictor = predictor_lib.load(args.workdir, args.checkpoint, args.batch_size)
  config = predictor.config
  data_path = (args.data_path or predictor.extra.get("data_path") or config.data.get("path")
               or data_lib.default_dataset_path())
  split = args.split or config.data.get("eval_split", "test")
  try:
    dataset = data_lib.open_dataset(data_path, split=split)
  except (OSError, ValueError, KeyError) as e:
    raise InputError(f"cannot open split {split!r} ({e})", path=data_path) from None
  outputs, labels = run_split(predictor, dataset, args.max_samples)
  results = analysis.analyse(outputs, labels, args.max_embedding_samples,
                             embedding_keys=tuple(predictor.embeddings))
  try:
    records = curves.read_metrics(args.workdir)
  except InputError as e:
    print(f"warning: no learning curves: {e}", file=sys.stderr)
    records = None

  out_dir = os.path.abspath(args.output_dir or os.path.join(args.workdir, "report"))
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".report-staging-", dir=parent)
  try:
    header = {"workdir": os.path.abspath(args.workdir), "model": config.model.name,
              "targets": ", ".join(predictor.targets),
              "checkpoint": f"{args.checkpoint} (step {predictor.step})",
              "dataset": f"{data_path} (split {split!r}, {len(dataset)} rows)"}
    analysis.write_report(results, records, staging, header, predictor.embeddings)
    # The modes a plain mkdir/open would give (mkdtemp makes 0700, which would keep the report
    # private to its writer whatever the umask): 0755/0644 under the usual umask 022.
    umask = os.umask(0o022)   # the only way to read it; restored at once
    os.umask(umask)
    for root, _, files in os.walk(staging):
      os.chmod(root, 0o777 & ~umask)
      for name in files:
        os.chmod(os.path.join(root, name), 0o666 & ~umask)
    if os.path.isdir(out_dir):
      shutil.rmtree(out_dir)
    os.rename(staging, out_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return out_dir


@cli.input_errors
def main(argv=None) -> int:
  cli.parse(FLAGS, argv, __doc__)
  print(f"wrote {build(FLAGS)}")
  return 0


if __name__ == "__main__":
  cli.run(main)
