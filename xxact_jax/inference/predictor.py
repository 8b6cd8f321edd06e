"""`load(workdir)` -> Predictor: a model (or an ensemble) with the preparation of its inputs and
the phase identification of measured scans.

A measured scan goes: inputs.prepare_sample (read once, converted to Cu Kα, background, grid) →
Ensemble.predict_arrays (the models' averaged outputs) → identification.identify (reference
lookup, indexing) → answers.identified_prediction (the JSON).
"""

import os

import numpy as np

from xxact_jax.inference import answers
from xxact_jax.inference import ensemble as ensemble_lib
from xxact_jax.inference import identification as identification_lib
from xxact_jax.inference import inputs
from xxact_jax.inference import model as model_lib
from xxact_jax.inference import reference as reference_lib
from xxact_jax.inference import resample
from xxact_jax.inference.errors import InputError


class Predictor:
  """Predictions and embeddings of a trained model or ensemble (inference/ensemble.py).

  Measured scans are prepared with `preprocessing` (resample.Preprocessing; change it with
  `predictor.preprocessing = Preprocessing(...)`) and identified with `reference` and `indexing`
  as `load` describes (inference/identification.py). The first model's attributes (config,
  params, step, workdir, max_elements, uses_xrd, embeddings, temperatures, ...) are the
  predictor's.
  """

  def __init__(self, model: model_lib.Model | ensemble_lib.Ensemble,
               preprocessing: resample.Preprocessing | None = None,
               reference: reference_lib.ReferenceDatabase | None = None,
               indexing: bool = True):
    self.ensemble = (model if isinstance(model, ensemble_lib.Ensemble)
                     else ensemble_lib.Ensemble([model]))
    self.preprocessing = preprocessing or resample.Preprocessing()
    self.reference = reference
    self.indexing = bool(indexing)

  def __getattr__(self, name):
    if name == "ensemble":   # not set yet (copy, unpickling): no recursion
      raise AttributeError(name)
    return getattr(self.ensemble.first, name)

  @property
  def workdirs(self) -> list[str]:
    return self.ensemble.workdirs

  # Array-level API.

  def predict_arrays(self, species, fractions, xrd, measured=False) -> dict[str, np.ndarray]:
    """Outputs for [N, K] species/fractions and [N, 4250] patterns (Model.predict_arrays),
    averaged over the ensemble's models; the embeddings are the first model's."""
    return self.ensemble.predict_arrays(species, fractions, xrd, measured)

  def predict_each(self, species, fractions, xrd, measured=False) -> list[dict[str, np.ndarray]]:
    """predict_arrays' outputs of each model of the ensemble alone."""
    return self.ensemble.predict_each(species, fractions, xrd, measured)

  def uncalibrated(self) -> "Predictor":
    """This predictor with its models' uncalibrated probabilities (to score calibration)."""
    return Predictor(self.ensemble.uncalibrated(), self.preprocessing, self.reference,
                     self.indexing)

  # Sample-level API.

  def read_cif(self, cif: str, source: str | None = None) -> dict:
    """inputs.read_cif for this model: "formula" and "arrays" (species, fractions, xrd)."""
    return inputs.read_cif(cif, self.max_elements, source)

  def prepare(self, composition=None, xrd=None, wavelength=None, *, cif=None):
    """(species, fractions, xrd) model arrays of one sample (inputs.prepare_sample)."""
    return self.prepare_and_parse(composition, xrd, wavelength, cif=cif)[0]

  def prepare_and_parse(self, composition=None, xrd=None, wavelength=None, *, cif=None):
    """(`prepare`'s arrays, the scan parsed once for `identify`): inputs.prepare_sample."""
    return inputs.prepare_sample(self.ensemble.first, composition, xrd, wavelength, cif=cif,
                                 preprocessing=self.preprocessing)

  def identify(self, composition, xrd, wavelength=None) -> identification_lib.Identification:
    """The phase identification of a measured scan (identification.identify): the lattice
    that indexes it, the reference row of its composition that matches it."""
    return identification_lib.identify(
        composition, xrd, wavelength, targets=self.targets, reference=self.reference,
        indexing=self.indexing, preprocessing=self.preprocessing,
        max_elements=self.max_elements)

  def predict_batch(self, compositions, xrds=None, wavelength=None) -> dict[str, np.ndarray]:
    """Batched predictions for lists of compositions and patterns (see `prepare`); with a
    reference, the class probabilities of a scan it matches are its answer, as in `predict`."""
    out, scans = self._predict_stacked(compositions, xrds, wavelength)
    out = {k: v for k, v in out.items() if k not in self.embeddings}
    for i, (composition, scan) in enumerate(zip(compositions, scans)):
      if scan is not None:
        self.identify(composition, scan, wavelength).apply(out, i)
    return out

  def predict(self, formula_or_composition=None, xrd=None, wavelength=None, *,
              formula=None, composition=None, cif=None) -> dict:
    """One sample's predictions as a JSON-ready dict (answers.identified_prediction).

    The composition is the first argument, or `formula=` / `composition=`; or `cif=` (a path or
    CIF text) alone, whose pattern is simulated as in the dataset. A bad formula (syntax,
    unknown element, zero amount, an element outside `inputs.SUPPORTED_ELEMENTS`) raises
    ValueError naming it; a bad pattern or CIF raises InputError naming the file.
    """
    given = [v for v in (formula_or_composition, formula, composition) if v is not None]
    if len(given) > 1:
      raise ValueError("give the composition once (positionally, formula= or composition=)")
    # A scan file is read once: for the model, the indexing and the lookup.
    arrays, scan = self.prepare_and_parse(given[0] if given else None, xrd, wavelength, cif=cif)
    measured = xrd is not None and cif is None
    out = self.predict_arrays(*(a[None] for a in arrays), measured=measured)
    out = {k: v[0] for k, v in out.items() if k not in self.embeddings}
    identification = (self.identify(given[0] if given else None, scan, wavelength)
                      if measured else None)
    return answers.identified_prediction(out, self.targets, identification)

  def embed(self, compositions, xrds=None, wavelength=None) -> dict[str, np.ndarray]:
    """Composition, XRD and fused [CLS] embeddings ("comp_cls", "xrd_cls", "embedding").

    A single composition (not a list) gives arrays without the batch axis.
    """
    single = not isinstance(compositions, (list, tuple))
    if single:
      compositions, xrds = [compositions], [xrds]
    out, _ = self._predict_stacked(compositions, xrds, wavelength)
    result = {k: out[k] for k in self.embeddings}
    return {k: v[0] for k, v in result.items()} if single else result

  def _predict_stacked(self, compositions, xrds, wavelength):
    """(predict_arrays of the rows stacked, each row's scan as prepare_and_parse gives it back,
    None where none was given: every pattern given to the predictor is a measured scan)."""
    compositions = list(compositions)
    xrds = [None] * len(compositions) if xrds is None else list(xrds)
    if len(xrds) != len(compositions):
      raise ValueError(f"{len(compositions)} compositions but {len(xrds)} patterns")
    rows = [self.prepare_and_parse(c, x, wavelength) for c, x in zip(compositions, xrds)]
    scans = [scan for _, scan in rows]
    arrays = (np.stack(column) for column in zip(*(arrays for arrays, _ in rows)))
    return self.predict_arrays(*arrays, measured=[s is not None for s in scans]), scans


def load(workdir="pretrained", checkpoint: str = "best", batch_size: int = 256,
         preprocessing: resample.Preprocessing | None = None, reference="auto",
         indexing: bool = True) -> Predictor:
  """Restores parameters (only) of a trained workdir's best or latest checkpoint.

  With no `workdir` (or None, or "pretrained") the model shipped with the package is loaded
  (inference/pretrained.py), with its compact reference of its training rows for
  `reference="auto"`; the path of a folder written by `python -m xxact_jax.inference.export`
  (one with a MANIFEST.json) loads that model the same way.
  `workdir` may also name several workdirs (a list, or one string with commas): the predictor
  then averages their class probabilities and regression values (an ensemble, e.g. of seeds).
  They must predict the same targets from compositions encoded alike; the first gives the
  configuration, the reference ("auto": its training split) and the embeddings.

  `preprocessing` (default `resample.Preprocessing()`) prepares measured scans given to predict.
  `reference`: where measured scans are looked up by composition before the model answers
  (inference/reference.py): "auto" (default) the training split of the checkpoint's dataset when
  it is still on disk, "none", or the path of a prepared dataset.
  `indexing`: whether the model's answer for a measured scan no reference row matches is
  restricted to the systems of the lattice that indexes it (inference/indexing.py). A workdir
  without a usable checkpoint raises an InputError naming it.
  """
  from xxact_jax.inference import pretrained  # pylint: disable=g-import-not-at-top
  if workdir is None or workdir in pretrained.NAMES or pretrained.is_model_dir(workdir):
    return pretrained.load(workdir, batch_size=batch_size, preprocessing=preprocessing,
                           reference=reference, indexing=indexing)
  models = [model_lib.load(w, checkpoint, batch_size) for w in split_workdirs(workdir)]
  return Predictor(ensemble_lib.Ensemble(models), preprocessing,
                   reference_lib.resolve(reference, models[0].extra.get("data_path")), indexing)


def split_workdirs(workdir) -> list[str]:
  if isinstance(workdir, (str, os.PathLike)):
    names = [w.strip() for w in os.fspath(workdir).split(",")]
  else:
    names = [os.fspath(w) for w in workdir]
  names = [w for w in names if w]
  if not names:
    raise InputError("no workdir given", path=str(workdir))
  # The same run twice would be counted as an ensemble of two while averaging one model.
  seen = {}
  for name in names:
    real = os.path.realpath(name)
    if real in seen:
      raise InputError(f"given twice in the ensemble (also as {seen[real]!r}); an ensemble "
                       "averages different runs", path=name)
    seen[real] = name
  return names


