"""Does a probability mean what it says: expected calibration error, risk–coverage, temperature.

`expected_calibration_error` bins the answers by their probability and weighs each bin's gap
between mean probability and accuracy by its share of the answers (Guo et al., ICML 2017).
`risk_coverage` orders the answers from the surest and gives the accuracy of the surest k for
every k: a selective classifier answering only above a probability threshold moves along it
(El-Yaniv & Wiener, JMLR 2010). `fit_temperature` finds the T for which softmax(logits / T) has
the least negative log-likelihood on held-out labels.
"""

import numpy as np

ECE_BINS = 10


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float | None:
  """Σ_b (n_b / n) |accuracy_b − mean confidence_b| over equal-width probability bins."""
  confidence = np.asarray(confidence, np.float64)
  correct = np.asarray(correct, bool)
  if confidence.size == 0:
    return None
  index = np.minimum((confidence * bins).astype(int), bins - 1)
  total = 0.0
  for b in range(bins):
    sel = index == b
    if sel.any():
      total += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
  return float(total)


def risk_coverage(confidence, correct):
  """(coverage [n], accuracy [n]): the share answered and the accuracy of the answered when only
  the k surest answers are given, k = 1 … n (ties kept together at their last k)."""
  confidence = np.asarray(confidence, np.float64)
  correct = np.asarray(correct, bool)
  order = np.argsort(-confidence, kind="stable")
  hits = np.cumsum(correct[order])
  k = np.arange(1, confidence.size + 1)
  return k / confidence.size, hits / k


def accuracy_at_coverage(confidence, correct, coverage: float) -> float | None:
  """Accuracy of the surest `coverage` share of the answers (at least one)."""
  confidence = np.asarray(confidence)
  if confidence.size == 0:
    return None
  covered, accuracy = risk_coverage(confidence, correct)
  k = max(1, int(np.ceil(coverage * confidence.size)))
  return float(accuracy[k - 1]) if covered.size else None


def selective_summary(confidence, correct, min_confidence: float) -> dict:
  """How many answers reach `min_confidence`, and how often they are right."""
  confidence = np.asarray(confidence, np.float64)
  correct = np.asarray(correct, bool)
  answered = confidence >= min_confidence
  return {"min_confidence": float(min_confidence), "answered": int(answered.sum()),
          "coverage": float(answered.mean()) if confidence.size else None,
          "accuracy_answered": float(correct[answered].mean()) if answered.any() else None}


def fit_temperature(logits, labels) -> float:
  """The T > 0 minimising the mean NLL of softmax(logits / T) (golden-section search on log T)."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels, np.int64)
  keep = labels >= 0
  logits, labels = logits[keep], labels[keep]
  if not labels.size:
    return 1.0

  def nll(log_t):
    z = logits / np.exp(log_t)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(labels.size), labels].mean()

  lo, hi = np.log(0.05), np.log(20.0)
  ratio = (np.sqrt(5) - 1) / 2
  a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
  fa, fb = nll(a), nll(b)
  for _ in range(60):
    if fa < fb:
      hi, b, fb = b, a, fa
      a = hi - ratio * (hi - lo)
      fa = nll(a)
    else:
      lo, a, fa = a, b, fb
      b = lo + ratio * (hi - lo)
      fb = nll(b)
  return float(np.exp((lo + hi) / 2))


def risk_coverage_png(curves: dict, path: str, title: str = "") -> None:
  """One line per {name: (confidence, correct)}: accuracy of the answered against coverage."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.2, 4))
  for name, (confidence, correct) in curves.items():
    if len(confidence):
      coverage, accuracy = risk_coverage(confidence, correct)
      ax.plot(coverage, accuracy, label=f"{name} (n={len(confidence)})")
  ax.set_xlabel("share of scans answered (surest first)")
  ax.set_ylabel("accuracy of the answered")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left", fontsize=8)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
