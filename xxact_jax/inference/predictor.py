"""`load(workdir)` -> Predictor: restored parameters behind one jitted forward pass."""

import copy
import dataclasses
import os
import warnings

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from xxact_jax import constants
from xxact_jax import targets as targets_lib
from xxact_jax.inference import calibration
from xxact_jax.inference import inputs
from xxact_jax.inference import patterns
from xxact_jax.inference import indexing as indexing_lib
from xxact_jax.inference import reference as reference_lib
from xxact_jax.inference import resample
from xxact_jax.inference import wavelengths
from xxact_jax.inference.errors import InputError

DEFAULT_MAX_ELEMENTS = 10


class Predictor:
  """Predictions and embeddings of a trained model.

  Regression outputs are de-standardised (value·std + mean, in eV/atom or eV);
  classification outputs are softmax probabilities. Batches are padded to a
  power of two up to `batch_size` so a handful of shapes are ever compiled.
  Measured scans are prepared with `preprocessing` (resample.Preprocessing: background
  removal, Kα2 stripping); change it with `predictor.preprocessing = Preprocessing(...)`.
  With a `reference` (inference/reference.py), a scan whose composition the reference dataset
  holds gets the crystal system and space group of its best-matching row (phase identification);
  the model answers for the others. With `indexing` (default on), the model's answer for a scan
  that no reference row matches is restricted to the crystal systems of the cubic, tetragonal,
  hexagonal or orthorhombic lattice that indexes the scan's lines, when one does
  (inference/indexing.py).
  """

  def __init__(self, params, config, target_stats: dict, max_elements: int,
               workdir: str = "", step: int | None = None, batch_size: int = 256,
               extra: dict | None = None,
               preprocessing: resample.Preprocessing | None = None,
               reference: reference_lib.ReferenceDatabase | None = None,
               indexing: bool = True, temperatures: dict[str, float] | None = None):
    from xxact_jax.models import build_model  # pylint: disable=g-import-not-at-top
    self.reference = reference
    # {classification target: T}: measured scans get softmax(logits / T), fitted on augmented
    # patterns (inference/calibration.py); simulated patterns keep T = 1.
    self.temperatures = dict(temperatures or {})
    self.indexing = bool(indexing)
    self.params = jax.device_put(params)
    self.config = config
    self.target_stats = target_stats
    self.max_elements = int(max_elements)
    self.workdir = workdir
    self.step = step
    self.extra = extra or {}
    self.batch_size = int(batch_size)
    self.preprocessing = preprocessing or resample.Preprocessing()
    self.model_name = config.model.name
    self.targets = tuple(config.model.targets)
    # Further models whose outputs predict_arrays averages with this one's (load of several
    # workdirs): an ensemble of runs trained alike with different seeds.
    self.members: list["Predictor"] = []
    model = build_model(config.model)
    # What the model reads (an unused input is fed as zeros) and which outputs are embeddings.
    self.uses_composition = model.uses_composition
    self.uses_xrd = model.uses_xrd
    self.embeddings = dict(model.embeddings)
    embedding_keys = tuple(self.embeddings)
    stats = {t: {"mean": float(s["mean"]), "std": float(s["std"])}
             for t, s in target_stats.items()}
    targets = self.targets

    def forward(params, species, fractions, xrd, measured, temperatures):
      out = model.apply({"params": params}, species, fractions, xrd, train=False,
                        measured=measured)
      result = {k: out[k].astype(jnp.float32) for k in embedding_keys}
      for t in targets:
        target = targets_lib.get(t)
        if target.is_regression:
          result[t] = target.destandardise(out[t].astype(jnp.float32), stats[t])
        else:
          scale = jnp.where(measured, 1.0 / temperatures[t], 1.0)[:, None]
          result[t] = jax.nn.softmax(out[t].astype(jnp.float32) * scale, axis=-1)
      return result

    self._forward = jax.jit(forward)

  # Array-level API.

  def predict_arrays(self, species, fractions, xrd, measured=False) -> dict[str, np.ndarray]:
    """Outputs for [N, K] species/fractions and [N, 4250] patterns, in batches.

    `measured` (a bool, or bool [N]): which patterns are measured scans rather than simulated
    ones; a model trained with `model.xrd_measurement_embedding` reads them accordingly, the
    others ignore it. `predict`, `predict_batch` and `evaluate --measured` set it for scans.

    Returns numpy arrays: regression [N], class probabilities [N, C], and the
    embeddings the model exposes ("embedding", "comp_cls", "xrd_cls") [N, D]. An ensemble
    (`members`) averages the regression values and class probabilities of all its models; the
    embeddings are the first model's, since those of separately trained models do not share axes.
    """
    return average_outputs(self.predict_each(species, fractions, xrd, measured), self.targets)

  def predict_each(self, species, fractions, xrd, measured=False) -> list[dict[str, np.ndarray]]:
    """predict_arrays' outputs of this model alone, then of each of its `members` alone."""
    return [m._predict_one(species, fractions, xrd, measured)  # pylint: disable=protected-access
            for m in [self] + self.members]

  @property
  def workdirs(self) -> list[str]:
    """This model's workdir, then its members'."""
    return [m.workdir for m in [self] + self.members]

  def _predict_one(self, species, fractions, xrd, measured) -> dict[str, np.ndarray]:
    species = np.asarray(species, np.int32)
    fractions = np.asarray(fractions, np.float32)
    xrd = np.asarray(xrd, np.float32)
    n = species.shape[0]
    measured = np.broadcast_to(np.asarray(measured, bool), (n,))
    if n == 0:
      raise ValueError("predict_arrays needs at least one sample")
    chunks = []
    for start in range(0, n, self.batch_size):
      stop = min(start + self.batch_size, n)
      size = self._padded_size(stop - start)
      pad = lambda a: np.concatenate([a[start:stop], np.repeat(a[start:start + 1],
                                                               size - (stop - start), 0)])
      temperatures = {t: np.float32(self.temperatures.get(t, 1.0)) for t in self.targets
                      if not targets_lib.get(t).is_regression}
      out = self._forward(self.params, pad(species), pad(fractions), pad(xrd), pad(measured),
                          temperatures)
      chunks.append({k: np.asarray(v)[:stop - start] for k, v in out.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

  def without_temperatures(self) -> "Predictor":
    """This model alone with its uncalibrated probabilities (what calibration fits)."""
    plain = copy.copy(self)
    plain.temperatures, plain.members = {}, []
    return plain

  def uncalibrated(self) -> "Predictor":
    """This model and its members with their uncalibrated probabilities (to score calibration)."""
    plain = copy.copy(self)
    plain.temperatures = {}
    plain.members = [m.uncalibrated() for m in self.members]
    return plain

  def _padded_size(self, count: int) -> int:
    return min(self.batch_size, 1 << max(0, count - 1).bit_length())

  # Sample-level API.

  def read_cif(self, cif: str, source: str | None = None) -> dict:
    """A CIF (a path, or the text itself) as the dataset featurises it: "formula" and "arrays"
    (species, fractions, xrd). pymatgen is imported only here."""
    if "data_" in cif and "\n" in cif:       # CIF text, not a path
      features = inputs.featurize_cif_text(cif, self.max_elements, source=source or "<CIF text>")
    else:
      features = inputs.featurize_cif(cif, self.max_elements)
    return {"formula": features["formula"],
            "arrays": (features["species"], features["fractions"],
                       inputs.as_stored(features["xrd"]))}

  def prepare(self, composition=None, xrd=None, wavelength=None, *, cif=None):
    """(species, fractions, xrd) model arrays of one sample; zeros for an unused modality.

    `cif` (a path or CIF text) takes the place of the composition and the pattern. The
    wavelength (Å or an anode name) is checked here, for every entry point, with the
    InputError's field "wavelength".
    """
    return self.prepare_and_parse(composition, xrd, wavelength, cif=cif)[0]

  def prepare_and_parse(self, composition=None, xrd=None, wavelength=None, *, cif=None):
    """(`prepare`'s arrays, the scan): a pattern file the model reads is parsed once, here, and
    comes back parsed (patterns.MeasuredPattern, which keeps its path) for `identify`, so that
    the file is not read again; any other `xrd` comes back as given. The composition is checked
    before the pattern is read."""
    if cif is not None:
      if composition is not None or xrd is not None:
        raise ValueError("give a CIF, or a composition and a pattern, not both")
      return self.read_cif(cif)["arrays"], None
    if wavelength is not None:
      try:
        wavelengths.parse_wavelength(wavelength)
      except ValueError as e:
        raise InputError(str(e), field="wavelength") from None
    if self.uses_composition:
      if composition is None:
        raise InputError(f"the {self.model_name} model needs a composition")
      species, fractions = inputs.encode(composition, self.max_elements)
    else:
      species = np.zeros(self.max_elements, np.int32)
      fractions = np.zeros(self.max_elements, np.float32)
      if composition is not None:   # still validated, so a typo is not silently ignored
        inputs.encode(composition, self.max_elements)
    if self.uses_xrd:
      if xrd is None:
        raise InputError(f"the {self.model_name} model needs an XRD pattern")
      if isinstance(xrd, (str, os.PathLike)):
        xrd = patterns.read_pattern(os.fspath(xrd))
      pattern = inputs.as_stored(inputs.pattern_on_grid(xrd, wavelength, self.preprocessing))
    else:
      pattern = np.zeros(constants.NUM_XRD_POINTS, np.float32)
    return (species, fractions, pattern), xrd

  def predict_batch(self, compositions, xrds=None, wavelength=None) -> dict[str, np.ndarray]:
    """Batched predictions for lists of compositions and patterns (see `prepare`); with a
    reference, the class probabilities of a scan it matches are its answer, as in `predict`."""
    arrays, scans = self._stack(compositions, xrds, wavelength)
    out = self.predict_arrays(*arrays, measured=[scan is not None for scan in scans])
    out = {k: v for k, v in out.items() if k not in self.embeddings}
    for i, (composition, scan) in enumerate(zip(compositions, scans)):
      if scan is not None:
        apply_identification(out, i, *self.identify(composition, scan, wavelength))
    return out

  def predict(self, formula_or_composition=None, xrd=None, wavelength=None, *,
              formula=None, composition=None, cif=None) -> dict:
    """One sample's predictions as a JSON-ready dict (see `format_prediction`).

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
    out = self.predict_arrays(*(a[None] for a in arrays),
                              measured=xrd is not None and cif is None)
    out = {k: v[0] for k, v in out.items() if k not in self.embeddings}
    match = lattice = None
    if xrd is not None and cif is None:
      match, lattice = self.identify(given[0] if given else None, scan, wavelength)
    return identified_prediction(out, self.targets, match, lattice)

  def identify(self, composition, xrd, wavelength=None):
    """(reference.Match or None, indexing.Indexing or None) of a measured scan: the
    high-symmetry lattice that indexes it (with `self.indexing`), and the reference row of its
    composition that matches it, chosen among the rows of the systems the lattice allows when
    there are such rows. A match answers; a lattice alone restricts the model's answer."""
    if isinstance(xrd, (str, os.PathLike)):
      xrd = patterns.read_pattern(os.fspath(xrd))   # read once for the indexing and the lookup
    classifies = {"crystal_system", "spacegroup_number"} & set(self.targets)
    lattice = self.index(xrd, wavelength) if self.indexing and classifies else None
    match = (self.match(composition, xrd, wavelength, lattice) if composition is not None
             else None)
    return match, lattice

  def index(self, xrd, wavelength=None):
    """The cubic, tetragonal, hexagonal or orthorhombic lattice that indexes a scan
    (indexing.Indexing), or None. The lines are found after Kα2 stripping (for an anode's
    doublet) and SNIP background removal, whatever the model's preprocessing."""
    with warnings.catch_warnings():
      # A scan at a single wavelength has no Kα2 to strip; coverage was reported for the model.
      warnings.simplefilter("ignore", resample.PreprocessingWarning)
      warnings.simplefilter("ignore", resample.PartialCoverageWarning)
      warnings.simplefilter("ignore", resample.WavelengthAssumedWarning)
      pattern = inputs.pattern_on_grid(
          xrd, wavelength, dataclasses.replace(self.preprocessing, strip_ka2=True,
                                               background="none", redraw_peaks=False))
    try:
      return indexing_lib.index_pattern(pattern)
    except (ValueError, np.linalg.LinAlgError) as e:
      # Indexing only narrows the model's answer: a scan it cannot handle keeps that answer.
      logging.warning("No indexing of %s: %s", xrd if isinstance(xrd, str) else "the pattern", e)
      return None

  def match(self, composition, xrd, wavelength=None, lattice=None):
    """The reference row matching a measured scan (reference.Match), or None without a
    reference or when it lacks the composition. The scan is compared with the reference's
    background-free simulated patterns after SNIP background removal, whatever the model's
    preprocessing; with an indexed `lattice`, among the rows of the systems it allows first."""
    if self.reference is None:
      return None
    species, fractions = inputs.encode(composition, self.max_elements)
    with warnings.catch_warnings():
      # Coverage and an assumed wavelength were reported when the scan was prepared for the
      # model; a second, raw copy of each was printed from here.
      warnings.simplefilter("ignore", resample.PartialCoverageWarning)
      warnings.simplefilter("ignore", resample.WavelengthAssumedWarning)
      pattern = inputs.pattern_on_grid(
          xrd, wavelength, dataclasses.replace(self.preprocessing, background="snip"))
    return self.reference.match(species, fractions, pattern,
                                None if lattice is None else lattice.crystal_systems)

  def embed(self, compositions, xrds=None, wavelength=None) -> dict[str, np.ndarray]:
    """Composition, XRD and fused [CLS] embeddings ("comp_cls", "xrd_cls", "embedding").

    A single composition (not a list) gives arrays without the batch axis.
    """
    single = not isinstance(compositions, (list, tuple))
    if single:
      compositions, xrds = [compositions], [xrds]
    arrays, scans = self._stack(compositions, xrds, wavelength)
    out = self.predict_arrays(*arrays, measured=[scan is not None for scan in scans])
    result = {k: out[k] for k in self.embeddings}
    return {k: v[0] for k, v in result.items()} if single else result

  def _stack(self, compositions, xrds, wavelength):
    """(stacked model arrays, each row's scan as prepare_and_parse gives it back, None where
    none was given: every pattern given to the predictor is a measured scan)."""
    compositions = list(compositions)
    xrds = [None] * len(compositions) if xrds is None else list(xrds)
    if len(xrds) != len(compositions):
      raise ValueError(f"{len(compositions)} compositions but {len(xrds)} patterns")
    rows = [self.prepare_and_parse(c, x, wavelength) for c, x in zip(compositions, xrds)]
    return (tuple(np.stack(column) for column in zip(*(arrays for arrays, _ in rows))),
            [scan for _, scan in rows])


def average_outputs(outputs: list[dict], targets) -> dict:
  """An ensemble's outputs from its models' (Predictor.predict_each): each target's regression
  values and class probabilities averaged; the first model's embeddings."""
  result = dict(outputs[0])
  if len(outputs) > 1:
    for t in targets:
      result[t] = np.mean([o[t] for o in outputs], axis=0).astype(result[t].dtype)
  return result


def apply_identification(outputs: dict, row: int, match, lattice) -> None:
  """Row `row` of batched class probabilities with a scan's identification (Predictor.identify):
  a reference match answers; a lattice alone restricts the model's answer."""
  reference_lib.override_row(outputs, row, match)
  if match is None or not match.answered:   # below the similarity threshold: no answer
    indexing_lib.restrict_row(outputs, row, lattice)


def identified_prediction(outputs: dict, targets, match=None, lattice=None) -> dict:
  """format_prediction of one sample's outputs with its identification (Predictor.identify):
  the reference's answer for a match, the model's answer restricted to the lattice's systems
  without one; the model's own answer is kept beside either."""
  # The answer computed as for a batch (apply_identification), so that predict and evaluate
  # give the same probabilities.
  identified = {k: np.asarray(v)[None].copy() for k, v in outputs.items()}
  apply_identification(identified, 0, match, lattice)
  answer = format_prediction({k: v[0] for k, v in identified.items()}, targets)
  result = reference_lib.apply(format_prediction(outputs, targets), match, answer)
  if lattice is None:
    return result
  if match is not None and match.answered:
    result["indexing"] = lattice.as_dict()
    return result
  return indexing_lib.apply(result, answer, lattice)


UNDETERMINED = "undetermined"
CANDIDATES = 3


def apply_min_confidence(result: dict, targets, min_confidence: float) -> dict:
  """`result` (identified_prediction's) with every class answer whose probability is below
  `min_confidence` replaced by "undetermined" and its top candidates; returns it."""
  if min_confidence <= 0:
    return result
  for t in targets:
    answer = result.get(t)
    if not isinstance(answer, dict):
      continue
    if "probabilities" in answer:
      ranked = sorted(answer["probabilities"].items(), key=lambda kv: -kv[1])
      if ranked[0][1] < min_confidence:
        answer["prediction"] = UNDETERMINED
        answer["candidates"] = [{"prediction": n, "probability": p}
                                for n, p in ranked[:CANDIDATES]]
    elif "top5" in answer and answer["top5"][0]["probability"] < min_confidence:
      answer["prediction"] = UNDETERMINED
    if answer.get("prediction") == UNDETERMINED:
      answer["min_confidence"] = float(min_confidence)
  return result


def format_prediction(outputs: dict, targets) -> dict:
  """One sample's outputs as {target: ...}: values with units, class probabilities, top-5 groups."""
  result = {}
  for t in targets:
    value = np.asarray(outputs[t])
    target = targets_lib.get(t)
    if target.is_regression:
      result[t] = {"value": float(value), "unit": target.unit}
    elif target.class_names:
      probabilities = {name: float(p) for name, p in zip(target.class_names, value)}
      result[t] = {"prediction": target.class_names[int(np.argmax(value))],
                   "probabilities": probabilities}
    else:
      top = np.argsort(-value)[:5]
      result[t] = {"top5": [{t: int(target.label_of(i)), "probability": float(value[i])}
                            for i in top]}
  return result


def load(workdir="pretrained", which: str = "best", batch_size: int = 256,
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
  restricted to the systems of the lattice that indexes it (inference/indexing.py).

  Raises:
    InputError: naming the workdir when it holds no usable checkpoint.
  """
  from xxact_jax.inference import pretrained  # pylint: disable=g-import-not-at-top
  if workdir is None or workdir in pretrained.NAMES or pretrained.is_model_dir(workdir):
    return pretrained.load(workdir, batch_size=batch_size, preprocessing=preprocessing,
                           reference=reference, indexing=indexing)
  workdirs = split_workdirs(workdir)
  first = _load_one(workdirs[0], which, batch_size, preprocessing, reference, indexing)
  for other in workdirs[1:]:
    member = _load_one(other, which, batch_size, preprocessing, "none", False)
    for what, mine, theirs in (
        # Outputs are averaged by target name, so the order of the targets does not matter.
        ("targets", sorted(first.targets), sorted(member.targets)),
        ("max_elements", first.max_elements, member.max_elements),
        ("inputs (composition, XRD)", (first.uses_composition, first.uses_xrd),
         (member.uses_composition, member.uses_xrd))):
      if mine != theirs:
        raise InputError(f"an ensemble's models must agree on {what}: {mine} in "
                         f"{workdirs[0]}, {theirs} here", path=other)
    first.members.append(member)
  return first


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


def restore(workdir: str, which: str = "best"):
  """A workdir's best or latest checkpoint (training/checkpoints.py), or an InputError naming it."""
  from xxact_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise InputError("no such workdir", path=workdir)
  try:
    return checkpoints.restore_checkpoint(workdir, which)
  except checkpoints.CheckpointError as e:
    raise InputError(str(e), path=workdir) from None


def _load_one(workdir: str, which, batch_size, preprocessing, reference,
              indexing) -> Predictor:
  restored = restore(workdir, which)
  extra = restored.extra
  return Predictor(restored.params, restored.config, restored.target_stats,
                   extra.get("max_elements") or DEFAULT_MAX_ELEMENTS, workdir=workdir,
                   step=restored.step, batch_size=batch_size, extra=extra,
                   preprocessing=preprocessing,
                   reference=reference_lib.resolve(reference, extra.get("data_path")),
                   indexing=indexing,
                   temperatures=calibration.read_temperatures(workdir))
