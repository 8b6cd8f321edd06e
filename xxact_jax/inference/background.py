"""Background estimation of measured scans: SNIP (Ryan et al., NIM B 34, 396 (1988); Morháč &
Matoušek, Appl. Spectrosc. 62, 91 (2008)), the clipping filter of powder and XRF software."""

import numpy as np

# Clipping windows grow to this many grid points (0.02° each): wider than any peak (σ = 0.1°
# patterns are ~0.5° at the base; measured peaks up to ~1°), narrower than an amorphous hump.
SNIP_HALF_WIDTH = 60


def snip(intensity: np.ndarray, half_width: int = SNIP_HALF_WIDTH) -> np.ndarray:
  """The SNIP background of a non-negative 1-D profile, on the log-log-sqrt scale that keeps
  the filter from cutting into counting noise."""
  y = np.maximum(np.asarray(intensity, np.float64), 0.0)
  v = np.log(np.log(np.sqrt(y + 1.0) + 1.0) + 1.0)
  n = v.size
  for p in range(1, min(half_width, (n - 1) // 2) + 1):
    mean = 0.5 * (v[:-2 * p] + v[2 * p:])
    v[p:n - p] = np.minimum(v[p:n - p], mean)
  return (np.exp(np.exp(v) - 1.0) - 1.0) ** 2 - 1.0


def subtract(intensity: np.ndarray, covered: np.ndarray | None = None,
             half_width: int = SNIP_HALF_WIDTH) -> np.ndarray:
  """The profile less its SNIP background, estimated on the `covered` points only (the rest is
  left as it is), clipped at zero."""
  y = np.asarray(intensity, np.float64).copy()
  index = np.flatnonzero(covered) if covered is not None else np.arange(y.size)
  if index.size < 3:
    return np.maximum(y, 0.0)
  y[index] = y[index] - snip(y[index], half_width)
  return np.maximum(y, 0.0)
