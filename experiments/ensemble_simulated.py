r"""Crystal-system accuracy of a model or an ensemble (xxact_jax.load of several workdirs) on a
split of a prepared dataset, through the predictor: the simulated-pattern side of
docs/MEASURED.md's ensemble comparison.

  python experiments/ensemble_simulated.py --workdir=RUN_0,RUN_1,RUN_2 --data=DATA [--split=test]

Prints one JSON line: the accuracy of the ensemble and of each of its models.
"""

import argparse
import json

import numpy as np

import xxact_jax
from xxact_jax import data as data_lib
from xxact_jax import progress as progress_lib
from xxact_jax.inference import ensemble as ensemble_lib

TARGET = "crystal_system"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="one workdir or several, with commas")
  parser.add_argument("--data", required=True)
  parser.add_argument("--split", default="test")
  parser.add_argument("--batch", type=int, default=512)
  args = parser.parse_args(argv)

  ensemble = xxact_jax.load(args.workdir, reference="none", indexing=False)
  dataset = data_lib.open_dataset(args.data, args.split)
  correct = np.zeros(len(ensemble.workdirs) + 1)
  counted = 0
  progress = progress_lib.Progress(len(dataset), "predicting", unit="rows")
  for start in range(0, len(dataset), args.batch):
    rows = np.arange(start, min(start + args.batch, len(dataset)))
    batch = dataset.read_batch(rows, ("species", "fractions", "xrd", TARGET))
    keep = batch[TARGET] >= 0
    inputs = [batch[k][keep] for k in ("species", "fractions", "xrd")]
    label = batch[TARGET][keep]
    each = ensemble.predict_each(*inputs)
    for i, out in enumerate(each + [ensemble_lib.average_outputs(each, ensemble.targets)]):
      correct[i] += np.sum(out[TARGET].argmax(-1) == label)
    counted += int(keep.sum())
    progress.advance(len(rows))
  accuracy = correct / max(counted, 1)
  print(json.dumps({"workdirs": ensemble.workdirs, "split": args.split,
                    "rows": counted, "ensemble_accuracy": float(accuracy[-1]),
                    "model_accuracy": [float(a) for a in accuracy[:-1]]}))


if __name__ == "__main__":
  main()
