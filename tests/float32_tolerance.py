"""One tolerance for float32 results computed two ways: jitted and op by op, at another batch size,
with padding, in another reduction order, or on another CPU.

XLA fuses, vectorises and orders reductions differently in each of these (and AVX2 and AVX-512
CPUs differ again), so a few float32 transformer layers can disagree by ~1e-5 of the output's
scale; 1.3e-6 on a 0.017 logit was seen on an AMD EPYC. The tolerance leaves a wide margin over
that, while the faults these comparisons look for (a row leaking into another, a lost mask, a
wrong slice) move outputs by 1e-2 or more.
"""

import numpy as np

RTOL = 1e-4
# Absolute part, as a fraction of the larger of 1 and the compared values' largest magnitude.
ATOL_OF_SCALE = 1e-4


def assert_close(actual, desired, err_msg=""):
  """np.testing.assert_allclose with the float32 tolerance, scaled to the values compared."""
  desired = np.asarray(desired, np.float64)
  scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol=RTOL,
                             atol=ATOL_OF_SCALE * scale, err_msg=err_msg)


def differs(a, b, margin=100):
  """True where a and b differ by far more than the float32 tolerance (margin × ATOL_OF_SCALE of
  their scale), so a test of "this changes the output" cannot pass on rounding noise."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(1.0, float(np.max(np.abs(b))))
  return float(np.max(np.abs(a - b))) > margin * ATOL_OF_SCALE * scale
