"""The shipped model: a trained ensemble and its compact reference, kept as package data.

`xxact_jax.load()` (or `load("pretrained")`), `python -m xxact_jax.predict` and
`python -m xxact_jax.evaluate --measured` without `--workdir` use it. It lives in
`xxact_jax/pretrained/<name>-v<version>/`, written by `python -m xxact_jax.inference.export`
(experiments/pretrained.sh builds it from mp_36k):

  MANIFEST.json                the name, version, format version, members, the command that built
                               it, sha256 and size of every file
  config.json                  the training config (the first member's; the members differ only in
                               their seed), target_stats.json
  reference.npz                the training rows, compact (inference/compact_reference.py)
  members/<i>/params/          a params-only Orbax checkpoint (float16 where the export measured
                               that predictions move by less than its tolerance: all of it, or
                               all but some top-level collections), with the member's
                               config.json and target_stats.json

`XXACT_JAX_PRETRAINED=/path/to/model-dir` points the package at another model of this layout.
"""

import hashlib
import json
import os

import numpy as np

from xxact_jax.inference import calibration
from xxact_jax.inference.errors import InputError

FORMAT = "xxact-pretrained"
# The layout above. A package reads the formats in SUPPORTED_FORMAT_VERSIONS; any other is
# refused with one line that says which format the model has and which this package reads.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "MANIFEST.json"
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "pretrained")
ENVIRONMENT_VARIABLE = "XXACT_JAX_PRETRAINED"
# The quick start's measured scan (xxact_jax/samples/README.md: source and citation).
SAMPLES_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "samples")
QUICK_START = {"id": "rruff_R050128-1", "mineral": "calcite", "formula": "CaCO3",
               "file": "calcite_R050128-1.xy.gz", "crystal_system": "trigonal",
               "spacegroup_number": 167, "wavelength": "Cu"}
# What load() / the CLIs accept as "the shipped model".
NAMES = ("pretrained",)


class FormatError(InputError):
  """A shipped model this package cannot read (another format version, damaged files)."""


def quick_start_sample() -> dict:
  """The packaged sample scan: QUICK_START with "path" (the file in the installed package)."""
  return dict(QUICK_START, path=os.path.join(SAMPLES_DIR, QUICK_START["file"]))


def is_model_dir(path) -> bool:
  return isinstance(path, (str, os.PathLike)) and os.path.isfile(
      os.path.join(os.fspath(path), MANIFEST))


def shipped_dirs(root: str | None = None) -> list[str]:
  """Model folders under the package's pretrained/ (any with a MANIFEST.json), sorted."""
  root = PACKAGE_DIR if root is None else root
  if not os.path.isdir(root):
    return []
  return sorted(os.path.join(root, name) for name in os.listdir(root)
                if is_model_dir(os.path.join(root, name)))


def find(name=None) -> str:
  """The folder of the shipped model: $XXACT_JAX_PRETRAINED when set, else the only (or, of
  several, the newest version of the) model under the package's pretrained/.

  `name`: None or "pretrained" for that default; a model folder's name under pretrained/
  (e.g. "xxact-mp36k-v1"); or the path of a model folder.
  """
  if name not in (None, *NAMES):
    if is_model_dir(name):
      return os.fspath(name)
    candidate = os.path.join(PACKAGE_DIR, os.fspath(name))
    if is_model_dir(candidate):
      return candidate
    raise InputError(f"no shipped model of that name (have: "
                     f"{[os.path.basename(d) for d in shipped_dirs()] or 'none'})", path=name)
  override = os.environ.get(ENVIRONMENT_VARIABLE)
  if override:
    if not is_model_dir(override):
      raise InputError(f"${ENVIRONMENT_VARIABLE} names no model folder (no {MANIFEST})",
                       path=override)
    return override
  found = shipped_dirs()
  if not found:
    raise InputError("this installation has no shipped model (xxact_jax/pretrained/ holds "
                     "none): give --workdir, or build one with experiments/pretrained.sh",
                     path=PACKAGE_DIR)
  return max(found, key=lambda d: _version_key(read_manifest(d, check=False)))


def _version_key(manifest: dict):
  version = str(manifest.get("version", "0"))
  return tuple(int(p) if p.isdigit() else 0 for p in version.split(".")), version


def read_manifest(model_dir: str, check: bool = True) -> dict:
  """MANIFEST.json of a model folder; with `check`, refused (FormatError, one line) unless its
  format version is one this package reads."""
  path = os.path.join(model_dir, MANIFEST)
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise FormatError(f"unreadable manifest ({e})", path=path) from None
  if not check:
    return manifest
  version = manifest.get("format_version")
  label = f"{manifest.get('name', '?')} v{manifest.get('version', '?')}"
  if manifest.get("format") != FORMAT:
    raise FormatError(f"not a shipped xxact_jax model (format {manifest.get('format')!r})",
                      path=model_dir or None)
  if version not in SUPPORTED_FORMAT_VERSIONS:
    package_version = installed_version()
    newer = isinstance(version, int) and version > max(SUPPORTED_FORMAT_VERSIONS)
    raise FormatError(
        f"model {label} has format version {version}; this xxact_jax ({package_version}) reads "
        f"version{'s' if len(SUPPORTED_FORMAT_VERSIONS) > 1 else ''} "
        f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} — "
        + ("upgrade xxact_jax" if newer else
           "rebuild the model with this package (experiments/pretrained.sh) or install the "
           f"xxact_jax it was built with ({manifest.get('package_version', '?')})"),
        path=model_dir or None)
  return manifest


def installed_version() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version("xxact_jax")
  except metadata.PackageNotFoundError:
    return "unknown"


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def file_table(model_dir: str) -> dict:
  """{relative path: {"bytes", "sha256"}} of every file of a model folder but the manifest."""
  table = {}
  for root, _, names in os.walk(model_dir):
    for n in sorted(names):
      path = os.path.join(root, n)
      rel = os.path.relpath(path, model_dir)
      if rel != MANIFEST:
        table[rel] = {"bytes": os.path.getsize(path), "sha256": sha256(path)}
  return dict(sorted(table.items()))


def cast_floats(tree, dtype):
  """Every floating-point leaf of a parameter tree as a numpy array of `dtype`."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: np.asarray(x).astype(dtype)
                      if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x), tree)


def save_params(path: str, params, float32_collections=None) -> None:
  """A params-only Orbax checkpoint at `path` (a new folder): floats in float16 but those of the
  top-level collections `float32_collections` (None: all float32)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  keep = set(params) if float32_collections is None else set(float32_collections)
  tree = {name: cast_floats(sub, np.float32 if name in keep else np.float16)
          for name, sub in params.items()}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), tree)
  checkpointer.wait_until_finished()
  checkpointer.close()


def restore_params(path: str):
  """The parameters of a params-only Orbax checkpoint, as float32 numpy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
  try:
    tree = checkpointer.restore(os.path.abspath(path),
                                args=ocp.args.StandardRestore(fallback_sharding=local))
  finally:
    checkpointer.close()
  return cast_floats(tree, np.float32)


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def load(name=None, batch_size: int = 256, preprocessing=None, reference="auto",
         indexing: bool = True, verify_files: bool = True):
  """The shipped model as a Predictor (an ensemble when it has several members).

  `reference`: "auto" (default) the model's compact reference of its training rows, "none",
  or a prepared dataset / compact reference to look scans up in (reference.resolve).
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import ensemble as ensemble_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import model as model_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax.inference import reference as reference_lib  # pylint: disable=g-import-not-at-top
  from xxact_jax import stored_config  # pylint: disable=g-import-not-at-top
  model_dir = find(name)
  manifest = read_manifest(model_dir)
  for rel, entry in (manifest.get("files", {}) if verify_files else {}).items():
    path = os.path.join(model_dir, rel)
    if not os.path.isfile(path):
      raise FormatError(f"{rel} is missing: reinstall xxact_jax", path=model_dir)
    if os.path.getsize(path) != entry["bytes"] or sha256(path) != entry["sha256"]:
      raise FormatError(f"{rel} differs from its manifest (damaged): reinstall xxact_jax",
                        path=model_dir)
  reference_path = os.path.join(model_dir, manifest["reference"]["path"]) if manifest.get(
      "reference") else None
  models = []
  for member in manifest["members"]:
    member_dir = os.path.join(model_dir, member["path"])
    config = ml_collections.ConfigDict(_read_json(os.path.join(member_dir, "config.json")))
    stored_config.upgrade(config)
    target_stats = _read_json(os.path.join(member_dir, "target_stats.json"))
    extra = {"config": config.to_dict(), "target_stats": target_stats,
             "data_path": reference_path, "max_elements": manifest["max_elements"],
             "pretrained": {k: manifest.get(k) for k in ("name", "version", "format_version")},
             "member": member}
    models.append(model_lib.Model(
        restore_params(os.path.join(member_dir, "params")), config, target_stats,
        manifest["max_elements"], workdir=member_dir if models else model_dir,
        step=member.get("step"), batch_size=batch_size, extra=extra,
        temperatures=calibration.read_temperatures(member_dir)))
  predictor = predictor_lib.Predictor(ensemble_lib.Ensemble(models), preprocessing,
                                      reference_lib.resolve(reference, reference_path), indexing)
  predictor.manifest = manifest
  return predictor
