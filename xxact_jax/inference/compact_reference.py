"""A compact reference: the labelled rows of a dataset with each pattern as a list of peaks.

The shipped model looks measured scans up in its training rows (inference/reference.py). A
prepared split stores a 4,250-point float16 pattern per row (8.5 kB); this file keeps, per row,
the composition, the labels, the material id and the peaks of the pattern (sub-grid 2θ and
height), from which the pattern is drawn again exactly as the dataset draws it (σ = 0.1°
Gaussians on the 5–90° grid, scaled to max 100: data/xrd.py `smear_sticks`) when a scan's
composition matches the row.

The peaks are found in the stored pattern itself (`extract_peaks`: repeated removal of the
largest remaining Gaussian, its centre and height from the three grid points around the
maximum; then `refine_peaks`, Gauss–Newton on all centres and heights, and `refine_heights`,
linear least squares on the heights), so any prepared dataset can be made compact without its
structures.

Storage (one `.npz`, `FORMAT_VERSION`):
  species        uint8  [N, K]   atomic numbers, 0 = padding
  fractions_milli uint16 [N, K]  element fractions in thousandths (the lookup's precision)
  crystal_system int8   [N]      spacegroup_number int16 [N]
  formation_energy_per_atom, band_gap float32 [N]
  material_id    str    [N]
  peak_offsets   int64  [N + 1]  row i's peaks are peak_*[offsets[i]:offsets[i + 1]], in
                                 increasing 2θ
  peak_step_high, peak_step_low  uint8 [P]  the peak's position (2θ − 5°) / POSITION_STEP less
                                 the previous peak's of the row (the first: less 0), as high and
                                 low bytes (small steps in two byte planes compress best)
  peak_height    uint8  [P]      255·√(I / I_max): the square root keeps weak peaks (the lookup
                                 compares square-root intensities)
  meta           JSON            format, source, split, rows, the extraction's parameters
"""

import json
import os

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from xxact_jax import constants
from xxact_jax.inference.errors import InputError

FORMAT = "xxact-compact-reference"
FORMAT_VERSION = 1
FILE_NAME = "reference.npz"
# Peak positions: 0.002° steps from 5° (uint16 reaches 136°).
POSITION_STEP = 0.002
# Peaks are taken down to this height (0–100 scale) of what remains of the pattern, at most
# MAX_PEAKS per row (the highest kept).
MIN_HEIGHT = 0.05
MAX_PEAKS = 400
_HEIGHT_LEVELS = 255


class CompactReferenceError(InputError):
  """A file that is not a compact reference this version can read."""


def _window(sigma: float):
  """(σ in grid points, the grid offsets within ±6σ of a centre)."""
  s = sigma / constants.TWO_THETA_STEP
  half = int(np.ceil(6 * s))
  return s, np.arange(-half, half + 1)


def extract_peaks(patterns: np.ndarray, min_height: float = MIN_HEIGHT,
                  max_peaks: int = MAX_PEAKS, sigma: float = constants.XRD_SIGMA):
  """Peaks of smeared patterns [B, 4250] (max 100): a list of (2θ [n], height [n]) per row.

  Each step removes, from every row at once, the Gaussian of width `sigma` under the row's
  largest remaining point: its centre from the parabola through the logarithms of the three
  points around the maximum (exact for a lone Gaussian; kept within half a grid step), its
  height from the maximum and that offset. A row stops when its remainder is below
  `min_height` or it has `max_peaks` peaks.
  """
  patterns = np.asarray(patterns, np.float64)
  b, n = patterns.shape
  s, window = _window(sigma)
  half = int(window[-1])
  # Margins of `half` points (never maxima: -inf outside the grid) so that no window is clipped.
  residual = np.full((b, n + 2 * half), -np.inf)
  residual[:, half:half + n] = patterns
  positions = np.zeros((b, max_peaks))
  heights = np.zeros((b, max_peaks))
  counts = np.zeros(b, np.int64)
  rows = np.arange(b)          # the rows still being worked on (their residual rows)
  tiny = 1e-12
  for k in range(max_peaks):
    i = residual.argmax(axis=1)
    y0 = residual[np.arange(len(rows)), i]
    active = y0 >= min_height
    if not active.all():       # finished rows leave the working set
      rows, residual, i, y0 = rows[active], residual[active], i[active], y0[active]
      if not len(rows):
        break
    local = np.arange(len(rows))
    ym, yp = residual[local, i - 1], residual[local, i + 1]
    lm, l0, lp = (np.log(np.maximum(v, tiny)) for v in (ym, y0, yp))
    curvature = lm - 2 * l0 + lp
    with np.errstate(divide="ignore", invalid="ignore"):
      delta = np.where((curvature < 0) & (ym > tiny) & (yp > tiny),
                       0.5 * (lm - lp) / curvature, 0.0)
    delta = np.clip(np.nan_to_num(delta), -0.5, 0.5)
    height = y0 * np.exp(delta ** 2 / (2 * s ** 2))
    index = i[:, None] + window[None, :]
    residual[local[:, None], index] -= height[:, None] * np.exp(
        -0.5 * ((window[None, :] - delta[:, None]) / s) ** 2)
    positions[rows, k] = constants.TWO_THETA_MIN + constants.TWO_THETA_STEP * (i - half + delta)
    heights[rows, k] = height
    counts[rows] += 1
  return [(positions[r, :counts[r]], heights[r, :counts[r]]) for r in range(b)]


def refine_peaks(pattern: np.ndarray, two_theta: np.ndarray, heights: np.ndarray,
                 sigma: float = constants.XRD_SIGMA, iterations: int = 3,
                 damping: float = 1e-3, max_move: float = 1.5) -> tuple:
  """(2θ, heights) fitted jointly to the pattern by damped Gauss–Newton steps (positions move
  at most `max_move` grid steps per step): overlapping peaks, which the greedy removal places
  between their true centres, separate again. Peaks whose height is not positive are dropped."""
  pattern = np.asarray(pattern, np.float64)
  n, step = len(pattern), constants.TWO_THETA_STEP
  s, window = _window(sigma)
  centre = (np.asarray(two_theta, np.float64) - constants.TWO_THETA_MIN) / step
  height = np.asarray(heights, np.float64).copy()
  for _ in range(iterations):
    m = len(centre)
    if m == 0:
      break
    index = np.rint(centre).astype(np.int64)[:, None] + window[None, :]
    inside = (index >= 0) & (index < n)
    u = (index - centre[:, None]) / s
    g = np.exp(-0.5 * u ** 2) * inside
    model = np.bincount(index[inside], weights=(height[:, None] * g)[inside], minlength=n)
    peak_of = np.broadcast_to(np.arange(m)[:, None], index.shape)[inside]
    # Jacobian [grid, 2m]: ∂/∂height, then ∂/∂centre; sparse (each peak spans its window).
    jacobian = sparse.csc_matrix(
        (np.concatenate([g[inside], (height[:, None] * g * u / s)[inside]]),
         (np.concatenate([index[inside], index[inside]]), np.concatenate([peak_of, m + peak_of]))),
        shape=(n, 2 * m))
    normal = (jacobian.T @ jacobian).tocsc()
    normal = normal + sparse.diags(damping * normal.diagonal() + 1e-9)
    update = sparse_linalg.spsolve(normal.tocsc(), jacobian.T @ (pattern - model))
    height = height + update[:m]
    centre = centre + np.clip(update[m:], -max_move, max_move)
    keep = height > 0
    centre, height = centre[keep], height[keep]
  return constants.TWO_THETA_MIN + step * centre, height


def refine_heights(pattern: np.ndarray, two_theta: np.ndarray, heights: np.ndarray,
                   sigma: float = constants.XRD_SIGMA, rounds: int = 3) -> tuple:
  """(2θ, heights) with the heights fitted jointly to the pattern by least squares, the
  positions kept: the greedy removal overshoots where peaks overlap. The normal equations use
  the Gaussians' overlap integrals (the grid samples σ with 5 points); peaks whose fitted height
  is not positive are dropped and the rest fitted again."""
  pattern = np.asarray(pattern, np.float64)
  n, step = len(pattern), constants.TWO_THETA_STEP
  s, window = _window(sigma)
  for _ in range(rounds):
    if len(two_theta) == 0:
      break
    centre = (two_theta - constants.TWO_THETA_MIN) / step
    index = np.rint(centre).astype(np.int64)[:, None] + window[None, :]
    inside = (index >= 0) & (index < n)
    g = np.exp(-0.5 * ((index - centre[:, None]) / s) ** 2) * inside
    rhs = (g * pattern[np.clip(index, 0, n - 1)]).sum(axis=1)
    distance = centre[:, None] - centre[None, :]
    # Overlaps of peaks more than 12σ apart (< 1e-15) are left out: a sparse, banded system.
    gram = np.where(np.abs(distance) < 12 * s,
                    np.sqrt(np.pi) * s * np.exp(-distance ** 2 / (4 * s ** 2)), 0.0)
    # A small ridge: two peaks a fraction of a grid step apart make the system nearly singular.
    gram[np.diag_indices_from(gram)] += 1e-6 * s
    fitted = sparse_linalg.spsolve(sparse.csc_matrix(gram), rhs)
    keep = fitted > 0
    two_theta, heights = two_theta[keep], fitted[keep]
    if keep.all():
      break
  return two_theta, heights


def encode_peaks(two_theta: np.ndarray, heights: np.ndarray):
  """(uint16 positions, uint8 heights) of one row's peaks in increasing 2θ; peaks whose height
  rounds to nothing or whose position leaves uint16 are dropped."""
  two_theta, heights = np.asarray(two_theta, np.float64), np.asarray(heights, np.float64)
  top = max(float(heights.max(initial=0.0)), 1e-12)
  code = np.rint(_HEIGHT_LEVELS * np.sqrt(np.clip(heights / top, 0.0, 1.0)))
  position = np.rint((two_theta - constants.TWO_THETA_MIN) / POSITION_STEP)
  keep = (code > 0) & (position >= 0) & (position <= np.iinfo(np.uint16).max)
  order = np.argsort(position[keep], kind="stable")
  return (position[keep][order].astype(np.uint16), code[keep][order].astype(np.uint8))


def draw(position: np.ndarray, code: np.ndarray) -> np.ndarray:
  """The pattern of encoded peaks as the dataset draws patterns: float32 [4250], max 100."""
  from xxact_jax.data.xrd import smear_sticks  # pylint: disable=g-import-not-at-top
  if len(position) == 0:
    return np.zeros(constants.NUM_XRD_POINTS, np.float32)
  return smear_sticks(constants.TWO_THETA_MIN + POSITION_STEP * position.astype(np.float64),
                      constants.XRD_MAX_INTENSITY * (code.astype(np.float64) / _HEIGHT_LEVELS) ** 2)


def build(dataset_path: str, split: str | None = "train", batch_rows: int = 1024,
          min_height: float = MIN_HEIGHT, max_peaks: int = MAX_PEAKS, progress=None) -> dict:
  """The compact reference arrays of a prepared dataset's split (the labelled rows: a row
  without a crystal system cannot answer a lookup and is left out)."""
  from xxact_jax.data import open_dataset  # pylint: disable=g-import-not-at-top
  ds = open_dataset(dataset_path, split)
  labels = ds.read_batch(np.arange(len(ds)), ("species", "fractions", "crystal_system",
                                              "spacegroup_number", "formation_energy_per_atom",
                                              "band_gap"))
  rows = np.flatnonzero(labels["crystal_system"] >= 0)
  offsets, positions, codes = [0], [], []
  for start in range(0, len(rows), batch_rows):
    chunk = rows[start:start + batch_rows]
    xrd = ds.read_batch(chunk, ("xrd",))["xrd"].astype(np.float64)
    for pattern, (two_theta, height) in zip(xrd, extract_peaks(xrd, min_height, max_peaks)):
      position, code = encode_peaks(*refine_heights(pattern, *refine_peaks(pattern, two_theta,
                                                                          height)))
      positions.append(position)
      codes.append(code)
      offsets.append(offsets[-1] + len(position))
    if progress is not None:
      progress(min(start + batch_rows, len(rows)), len(rows))
  # Python's round, as reference.composition_key rounds.
  milli = np.asarray([[round(round(float(f), 3) * 1000) for f in row]
                      for row in labels["fractions"][rows]], np.int64).reshape(len(rows), -1)
  meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
          "source": os.path.abspath(dataset_path), "split": split, "rows": int(len(rows)),
          "min_height": min_height, "max_peaks": max_peaks, "position_step": POSITION_STEP,
          "sigma": constants.XRD_SIGMA}
  return {
      "species": labels["species"][rows].astype(np.uint8),
      "fractions_milli": milli.astype(np.uint16),
      "crystal_system": labels["crystal_system"][rows].astype(np.int8),
      "spacegroup_number": labels["spacegroup_number"][rows].astype(np.int16),
      "formation_energy_per_atom": labels["formation_energy_per_atom"][rows].astype(np.float32),
      "band_gap": labels["band_gap"][rows].astype(np.float32),
      "material_id": np.asarray(ds.material_ids(rows)),
      "peak_offsets": np.asarray(offsets, np.int64),
      "peak_position": (np.concatenate(positions) if positions
                        else np.zeros(0, np.uint16)).astype(np.uint16),
      "peak_height": (np.concatenate(codes) if codes else np.zeros(0, np.uint8)).astype(np.uint8),
      "meta": np.asarray(json.dumps(meta)),
  }


def save(arrays: dict, path: str) -> None:
  """Writes build()'s arrays as one compressed .npz (atomically), the positions as steps."""
  stored = dict(arrays)
  position = stored.pop("peak_position").astype(np.int64)
  offsets = stored["peak_offsets"]
  step = position.copy()
  step[1:] -= position[:-1]
  starts = offsets[:-1][offsets[:-1] < len(position)]
  step[starts] = position[starts]
  if len(step) and (step.min() < 0 or step.max() > np.iinfo(np.uint16).max):
    raise ValueError("peak positions must increase within each row and fit uint16")
  stored["peak_step_high"] = (step >> 8).astype(np.uint8)
  stored["peak_step_low"] = (step & 0xFF).astype(np.uint8)
  temporary = path + ".tmp.npz"
  np.savez_compressed(temporary, **stored)
  os.replace(temporary, path)


def _positions(arrays: dict) -> np.ndarray:
  """Absolute uint16 peak positions from the stored steps."""
  step = arrays.pop("peak_step_high").astype(np.int64) * 256 + arrays.pop("peak_step_low")
  offsets = arrays["peak_offsets"]
  total = np.cumsum(step)
  before = np.concatenate([[0], total])[offsets[:-1]]      # each row's running sum before it
  return (total - np.repeat(before, np.diff(offsets))).astype(np.uint16)


def is_compact(path) -> bool:
  """Whether `path` is a compact reference file, or a folder holding one (FILE_NAME)."""
  if not isinstance(path, (str, os.PathLike)):
    return False
  path = os.fspath(path)
  return (path.endswith(".npz") and os.path.isfile(path)) or os.path.isfile(
      os.path.join(path, FILE_NAME))


class CompactDataset:
  """The part of data.Dataset's interface a ReferenceDatabase reads (len, read_batch of
  species, fractions, crystal_system, spacegroup_number and xrd, material_ids), over a compact
  reference; "xrd" is drawn from the peaks of the rows asked for."""

  def __init__(self, path: str):
    if os.path.isdir(path):
      path = os.path.join(path, FILE_NAME)
    self.path = path
    try:
      with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
      raise CompactReferenceError(f"not a readable compact reference ({e})", path=path) from None
    try:
      self.meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError):
      raise CompactReferenceError("not a compact reference (no meta)", path=path) from None
    version = self.meta.get("format_version")
    if self.meta.get("format") != FORMAT or version != FORMAT_VERSION:
      raise CompactReferenceError(
          f"compact reference format {self.meta.get('format')!r} version {version}; "
          f"this xxact_jax reads version {FORMAT_VERSION} only (rebuild it with "
          "python -m xxact_jax.inference.export)", path=path)
    try:
      arrays["peak_position"] = _positions(arrays)
    except KeyError as e:
      raise CompactReferenceError(f"not a compact reference of this format (no {e})",
                                  path=path) from None
    self._arrays = arrays
    self.metadata = {"max_elements": int(arrays["species"].shape[1]), "compact": self.meta}

  def __len__(self) -> int:
    return len(self._arrays["crystal_system"])

  def read_batch(self, indices, fields) -> dict:
    indices = np.asarray(indices, np.int64)
    a = self._arrays
    out = {}
    for name in fields:
      if name == "xrd":
        out[name] = np.stack([self.pattern(int(i)) for i in indices]) if len(indices) else (
            np.zeros((0, constants.NUM_XRD_POINTS), np.float32))
      elif name == "fractions":
        out[name] = a["fractions_milli"][indices].astype(np.float32) / 1000
      elif name in ("species", "crystal_system", "spacegroup_number"):
        out[name] = a[name][indices].astype(np.int32)
      else:
        out[name] = a[name][indices]
    return out

  def peaks(self, i: int):
    """Row i's encoded peaks (uint16 positions, uint8 heights)."""
    start, stop = self._arrays["peak_offsets"][i:i + 2]
    return self._arrays["peak_position"][start:stop], self._arrays["peak_height"][start:stop]

  def pattern(self, i: int) -> np.ndarray:
    return draw(*self.peaks(i))

  def material_ids(self, indices) -> list[str]:
    return [str(self._arrays["material_id"][int(i)]) for i in indices]

  def __repr__(self) -> str:
    return f"CompactDataset({self.path!r}, rows={len(self)})"


def open_reference(path: str):
  """A ReferenceDatabase over a compact reference (a file or a folder holding FILE_NAME)."""
  from xxact_jax.inference import reference as reference_lib  # pylint: disable=g-import-not-at-top
  dataset = CompactDataset(path)
  return reference_lib.ReferenceDatabase(dataset.path, None, dataset=dataset)
