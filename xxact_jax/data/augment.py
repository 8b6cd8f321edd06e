"""Physics-based augmentation of simulated XRD batches towards measured laboratory scans.

The stored patterns are ideal: Cu Kα (1.54184 Å, the Kα1/Kα2 weighted mean) sticks smeared with a
Gaussian of σ = 0.1°, no background, no noise, exact lattice parameters. A diffractometer adds what
this module adds, each with a physical parameter drawn per pattern from a documented range:

| transform | parameter (config `augment.*`) | range | source of the range |
|---|---|---|---|
| lattice strain / thermal expansion, d → d(1+ε) | `strain` | ε ∈ ±0.015 | thermal expansion ≈ 1e-5 K⁻¹ over ~1000 K; PBE lattice parameters ≈ 1–2 % above experiment |
| zero-point error of 2θ | `zero_shift_deg` | ±0.1° | typical goniometer zero errors after alignment |
| sample displacement s, Δ2θ = −2 s cos θ / R | `displacement_mm`, `goniometer_radius_mm` | s ∈ ±0.2 mm, R = 240 mm | height error of a packed powder holder on a lab Bragg–Brentano diffractometer |
| Cu Kα1 + Kα2 doublet (λ 1.54056 / 1.54439 Å, ratio 2:1) in place of the mean Kα line | `ka2_prob` | on or off | Cu anode emission without a monochromator |
| instrument broadening, Caglioti FWHM² = U tan²θ + V tan θ + W (width taken at 5 angles, blended linearly; FFT convolution, area kept) | `caglioti_u`, `caglioti_v`, `caglioti_w` | U ∈ [0, 0.02], V ∈ [−0.01, 0], W ∈ [0, 0.01] deg² | lab instruments: 0.05–0.2° FWHM |
| crystallite-size (Scherrer) broadening, FWHM = Kλ/(L cos θ), K = 0.9 | `crystallite_nm` | L ∈ [20, 500] nm, log-uniform | nanocrystalline to well-crystallised powders |
| peak shape: pseudo-Voigt Lorentzian fraction | `eta` | η ∈ [0, 0.8] | lab profiles are mostly Lorentzian-Gaussian mixtures |
| relative intensities (stands in for preferred orientation) | `intensity_log_sigma`, `intensity_knot_deg` | log-scale σ ∈ [0, 0.3] over knots 0.5° apart | March–Dollase factors of 0.5–2 change strong reflections by tens of per cent |
| weak impurity peaks | `impurity_prob`, `impurity_max_peaks`, `impurity_height` | ≤ 3 peaks of 1–8 % | minor secondary phases |
| background: low-angle rise, smooth polynomial, amorphous hump | `background_prob`, `background_level` | each ≤ 0–15 % of the strongest peak | air scatter, fluorescence, sample holder, amorphous content |
| counting noise (Poisson, Gaussian approximation) | `noise_prob`, `peak_counts` | 100–100,000 counts at the strongest peak, log-uniform | fast scans to long scans |
| narrower scan range; unmeasured points marked `constants.UNMEASURED_INTENSITY` as the predict path marks them | `crop_prob`, `crop_low_deg`, `crop_high_deg` | start 5–20°, end 60–90° | common scan ranges |

A fraction `1 − apply_prob` of the patterns is left as simulated, so the model keeps its accuracy
on ideal patterns while it learns measured-like ones.

Every transform is batched, jit-compatible and draws its parameters from a key, so an augmented run
that folds the key from the step number resumes exactly. `augment_xrd` applies them in physical
order (sample → instrument → detector) and rescales to a maximum of 100 as the stored patterns.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections

from xxact_jax import constants
from xxact_jax import physics
from xxact_jax.data import resimulate

# Cu anode lines (Å): the weighted Kα mean the stored patterns use, Kα1, Kα2.
CU_KA, CU_KA1, CU_KA2 = constants.CU_KA_LINES
KA2_TO_KA1 = 0.5
# Angles at which the broadening width is evaluated; in between it is blended linearly.
BROADENING_BANDS = 5
FFT_SIZE = 6000     # 2^4·3·5^3 ≥ 4250 + 35° of padding


def default_config(enabled: bool = False) -> ml_collections.ConfigDict:
  """The ranges of the module docstring; `enabled=False` leaves batches untouched."""
  c = ml_collections.ConfigDict()
  c.enabled = enabled
  c.apply_prob = 0.8                 # per pattern; the rest stay as simulated
  c.strain = 0.015
  c.zero_shift_deg = 0.1
  c.displacement_mm = 0.2
  c.goniometer_radius_mm = 240.0
  c.ka2_prob = 0.5
  c.broadening_prob = 0.8
  c.caglioti_u = (0.0, 0.02)
  c.caglioti_v = (-0.01, 0.0)
  c.caglioti_w = (0.0, 0.01)
  c.crystallite_nm = (20.0, 500.0)
  c.eta = (0.0, 0.8)
  c.intensity_log_sigma = 0.3
  c.intensity_knot_deg = 0.5
  c.impurity_prob = 0.3
  c.impurity_max_peaks = 3
  c.impurity_height = (1.0, 8.0)
  c.background_prob = 0.8
  c.background_level = 15.0
  c.noise_prob = 0.8
  c.peak_counts = (100.0, 100_000.0)
  c.crop_prob = 0.3
  c.crop_low_deg = (5.0, 20.0)
  c.crop_high_deg = (60.0, 90.0)
  # Per-reflection effects of patterns simulated again from stored structures
  # (data.xrd_source="simulated"; data/resimulate.py has their ranges).
  c.structure = resimulate.default_config()
  return c


def grid() -> jax.Array:
  """float32 [4250]: the 2θ grid in degrees."""
  return jnp.asarray(constants.two_theta_grid(), jnp.float32)


def resample(xrd: jax.Array, source_two_theta: jax.Array) -> jax.Array:
  """out[b, i] = xrd[b] linearly interpolated at source_two_theta[b, i]; 0 off the grid or NaN."""
  n = xrd.shape[-1]
  index = (source_two_theta - constants.TWO_THETA_MIN) / constants.TWO_THETA_STEP
  valid = (index >= 0) & (index <= n - 1)           # False for NaN too
  index = jnp.where(valid, index, 0.0)
  lower = jnp.clip(jnp.floor(index).astype(jnp.int32), 0, n - 1)
  upper = jnp.clip(lower + 1, 0, n - 1)
  frac = index - lower
  a = jnp.take_along_axis(xrd, lower, axis=-1)
  b = jnp.take_along_axis(xrd, upper, axis=-1)
  return jnp.where(valid, a + frac * (b - a), 0.0)


def shift_peaks(xrd: jax.Array, strain=0.0, zero_shift_deg=0.0, displacement_mm=0.0,
                radius_mm: float = 240.0) -> jax.Array:
  """Moves every reflection as a strained, mis-aligned sample would show it.

  Parameters are scalars or [B, 1]: strain ε scales every d-spacing by (1+ε), so a peak at θ
  moves to asin(sin θ / (1+ε)) (Bragg's law, not a constant shift); the zero-point error adds
  `zero_shift_deg` to every 2θ; a sample displaced by s from the focusing circle of radius R
  shifts 2θ by −2 s cos θ / R (radians).
  """
  out = grid()[None, :]
  displacement = jnp.degrees(-2.0 * displacement_mm * jnp.cos(physics.theta(out)) / radius_mm)
  strained = out - zero_shift_deg - displacement       # where the strained reflection lies
  source = physics.rescale_two_theta(strained, 1.0 + strain)
  return resample(xrd, jnp.broadcast_to(source, xrd.shape))


def ka_doublet(xrd: jax.Array, ka1: float = CU_KA1, ka2: float = CU_KA2,
               ratio: float = KA2_TO_KA1, stored: float = CU_KA) -> jax.Array:
  """Replaces each reflection of the stored (mean-Kα) pattern by its Kα1 line and a Kα2
  companion of `ratio` times its height, each where Bragg's law puts it for its wavelength."""
  out = jnp.broadcast_to(grid()[None, :], xrd.shape)
  line1 = resample(xrd, physics.rescale_two_theta(out, stored / ka1))
  line2 = resample(xrd, physics.rescale_two_theta(out, stored / ka2))
  return line1 + ratio * line2


def caglioti_fwhm(two_theta, u, v, w) -> jax.Array:
  """Instrumental FWHM (degrees), sqrt(U tan²θ + V tan θ + W), floored at 0."""
  t = jnp.tan(physics.theta(two_theta))
  return jnp.sqrt(jnp.maximum(u * t * t + v * t + w, 0.0))


def broaden(xrd: jax.Array, fwhm: jax.Array, eta, bands: int = BROADENING_BANDS) -> jax.Array:
  """Convolves each pattern with a unit-area pseudo-Voigt (Lorentzian fraction `eta`, [B, 1])
  whose FWHM (degrees, [B, N] or [B, 1]) may grow with 2θ.

  The FWHM is taken at `bands` angles spread over the grid; each point's intensity is split
  between its two nearest bands (linear weights summing to 1) and spread by that band's kernel,
  so the area is kept exactly. The convolutions run as FFTs on a zero-padded grid with the
  kernels' analytic transforms (Gaussian exp(−2π²σ²f²), Lorentzian exp(−2πγ|f|)).
  """
  b, n = xrd.shape
  # Zero padding of 35°: what wraps around is the Lorentzian tail beyond that distance.
  size = FFT_SIZE
  fwhm = jnp.maximum(jnp.broadcast_to(fwhm, xrd.shape), 1e-3)
  eta = jnp.broadcast_to(eta, (b, 1))
  centres = jnp.linspace(0, n - 1, bands)                                    # grid indices
  position = jnp.arange(n) * ((bands - 1) / (n - 1))
  lower = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, bands - 2)
  frac = position - lower
  weights = (jax.nn.one_hot(lower, bands) * (1 - frac)[:, None]
             + jax.nn.one_hot(lower + 1, bands) * frac[:, None])             # [N, bands]
  band_fwhm = fwhm[:, jnp.round(centres).astype(jnp.int32)]                # [B, bands]
  freq = jnp.fft.rfftfreq(size, d=constants.TWO_THETA_STEP)                  # cycles / degree
  sigma = band_fwhm / (2 * math.sqrt(2 * math.log(2)))
  gamma = band_fwhm / 2
  spectra = (eta[..., None] * jnp.exp(-2 * math.pi * gamma[..., None] * freq)
             + (1 - eta[..., None]) * jnp.exp(-2 * (math.pi * sigma[..., None] * freq) ** 2))
  parts = jnp.fft.rfft(xrd[:, None, :] * weights.T[None], n=size, axis=-1)  # [B, bands, F]
  out = jnp.fft.irfft((parts * spectra).sum(axis=1), n=size, axis=-1)[:, :n]
  return jnp.maximum(out, 0.0)


def smooth_field(key, batch: int, knot_deg: float, sigma) -> jax.Array:
  """[B, N] log-normal factors with independent knots every `knot_deg`, linear in between."""
  knots = int(math.ceil((constants.TWO_THETA_MAX - constants.TWO_THETA_MIN) / knot_deg)) + 2
  values = sigma * jax.random.normal(key, (batch, knots))
  position = (grid() - constants.TWO_THETA_MIN) / knot_deg
  lower = jnp.floor(position).astype(jnp.int32)
  frac = position - lower
  field = values[:, lower] * (1 - frac) + values[:, lower + 1] * frac
  return jnp.exp(field)


def gaussian_peaks(centres_deg, heights, sigma_deg: float = constants.XRD_SIGMA) -> jax.Array:
  """[B, N]: sum over the last axis of `centres_deg` / `heights` ([B, P]) of Gaussian peaks."""
  g = grid()[None, None, :]
  peaks = heights[..., None] * jnp.exp(-0.5 * ((g - centres_deg[..., None]) / sigma_deg) ** 2)
  return peaks.sum(axis=1)


def background(key, batch: int, level) -> jax.Array:
  """[B, N] smooth, non-negative background in units of the strongest peak (100): a low-angle
  exponential rise, a cubic polynomial and an amorphous hump, each scaled by up to `level`."""
  k_amp, k_decay, k_poly, k_hump = jax.random.split(key, 4)
  g = grid()[None, :]
  amplitudes = level * jax.random.uniform(k_amp, (batch, 3))
  decay = jax.random.uniform(k_decay, (batch, 1), minval=3.0, maxval=15.0)
  rise = jnp.exp(-(g - constants.TWO_THETA_MIN) / decay)
  x = (g - constants.TWO_THETA_MIN) / (constants.TWO_THETA_MAX - constants.TWO_THETA_MIN)
  coef = jax.random.uniform(k_poly, (batch, 4), minval=-1.0, maxval=1.0)
  poly = coef[:, :1] + coef[:, 1:2] * x + coef[:, 2:3] * x ** 2 + coef[:, 3:4] * x ** 3
  poly = poly - poly.min(axis=-1, keepdims=True)
  poly = poly / jnp.maximum(poly.max(axis=-1, keepdims=True), 1e-6)
  centre_width = jax.random.uniform(k_hump, (batch, 2))
  centre = 15.0 + 20.0 * centre_width[:, :1]
  width = 3.0 + 5.0 * centre_width[:, 1:]
  hump = jnp.exp(-0.5 * ((g - centre) / width) ** 2)
  return amplitudes[:, :1] * rise + amplitudes[:, 1:2] * poly + amplitudes[:, 2:] * hump


def counting_noise(key, xrd: jax.Array, peak_counts) -> jax.Array:
  """Poisson counting noise for a scan whose strongest point (100) holds `peak_counts` counts
  ([B, 1]), in the Gaussian approximation (variance = counts), clipped at zero counts."""
  counts = xrd * (peak_counts / constants.XRD_MAX_INTENSITY)
  noisy = counts + jnp.sqrt(jnp.maximum(counts, 0.0)) * jax.random.normal(key, xrd.shape)
  return jnp.maximum(noisy, 0.0) * (constants.XRD_MAX_INTENSITY / peak_counts)


def crop(xrd: jax.Array, low_deg, high_deg) -> jax.Array:
  """`constants.UNMEASURED_INTENSITY` outside [low_deg, high_deg], as the predict path marks the
  range a scan did not cover."""
  g = grid()[None, :]
  return jnp.where((g >= low_deg) & (g <= high_deg), xrd, constants.UNMEASURED_INTENSITY)


def normalise(xrd: jax.Array) -> jax.Array:
  """Non-finite values to 0, negatives to 0, maximum 100; an all-zero row stays zero."""
  xrd = jnp.maximum(jnp.nan_to_num(xrd, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
  peak = xrd.max(axis=-1, keepdims=True)
  return jnp.where(peak > 0, xrd * (constants.XRD_MAX_INTENSITY / jnp.where(peak > 0, peak, 1.0)),
                   0.0)


def _uniform(key, shape, bounds):
  low, high = bounds
  return jax.random.uniform(key, shape, minval=low, maxval=high)


def _log_uniform(key, shape, bounds):
  low, high = bounds
  return jnp.exp(jax.random.uniform(key, shape, minval=math.log(low), maxval=math.log(high)))


def augment_xrd(key: jax.Array, xrd: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """The augmented batch (float32 [B, 4250], max 100), or `xrd` itself when disabled.

  A cropped pattern holds `constants.UNMEASURED_INTENSITY` outside its scan range, and so does
  every point the incoming pattern marks so (e.g. another anode's range, data/resimulate.py).
  """
  return augment_xrd_with_flags(key, xrd, config)[0]


def augment_xrd_with_flags(key: jax.Array, xrd: jax.Array, config: ml_collections.ConfigDict
                           ) -> tuple[jax.Array, jax.Array]:
  """(`augment_xrd`'s batch, bool [B]: which patterns were augmented, i.e. measured-like).

  The flags are what a model with `model.xrd_measurement_embedding` is told in training; the
  `1 − apply_prob` patterns left as simulated are told "simulated".
  """
  b = xrd.shape[0]
  if config is None or not config.enabled:
    return xrd, jnp.zeros((b,), bool)
  keys = iter(jax.random.split(key, 32))
  on = lambda p: jax.random.bernoulli(next(keys), p, (b, 1))
  unmeasured = xrd < 0
  simulated = normalise(jnp.where(unmeasured, 0.0, xrd.astype(jnp.float32)))
  x = simulated
  g = grid()[None, :]

  # The sample: lattice strain and intensities that texture changes.
  jitter = smooth_field(next(keys), b, config.intensity_knot_deg,
                        _uniform(next(keys), (b, 1), (0.0, config.intensity_log_sigma)))
  x = x * jitter
  # The instrument: alignment errors, the Kα doublet, broadening.
  x = shift_peaks(x, strain=_uniform(next(keys), (b, 1), (-config.strain, config.strain)),
                  zero_shift_deg=_uniform(next(keys), (b, 1),
                                          (-config.zero_shift_deg, config.zero_shift_deg)),
                  displacement_mm=_uniform(next(keys), (b, 1),
                                           (-config.displacement_mm, config.displacement_mm)),
                  radius_mm=config.goniometer_radius_mm)
  x = jnp.where(on(config.ka2_prob), ka_doublet(x), x)
  fwhm = (caglioti_fwhm(g, _uniform(next(keys), (b, 1), config.caglioti_u),
                        _uniform(next(keys), (b, 1), config.caglioti_v),
                        _uniform(next(keys), (b, 1), config.caglioti_w))
          + physics.scherrer_fwhm(jnp.cos(physics.theta(g)),
                                  _log_uniform(next(keys), (b, 1), config.crystallite_nm) * 10.0,
                                  CU_KA))
  eta = _uniform(next(keys), (b, 1), config.eta)
  x = jnp.where(on(config.broadening_prob), broaden(x, fwhm, eta), x)
  x = normalise(x)
  # Other phases and the detector: impurity peaks, background, counting noise, scan range.
  p = max(int(config.impurity_max_peaks), 1)
  present = jnp.arange(p)[None, :] < jax.random.randint(next(keys), (b, 1), 1, p + 1)
  heights = jnp.where(present & on(config.impurity_prob),
                      _uniform(next(keys), (b, p), config.impurity_height), 0.0)
  centres = _uniform(next(keys), (b, p), (constants.TWO_THETA_MIN, constants.TWO_THETA_MAX))
  x = x + gaussian_peaks(centres, heights)
  x = x + jnp.where(on(config.background_prob),
                    background(next(keys), b, config.background_level), 0.0)
  x = jnp.where(on(config.noise_prob),
                counting_noise(next(keys), x, _log_uniform(next(keys), (b, 1),
                                                           config.peak_counts)), x)
  x = normalise(x)
  low = _uniform(next(keys), (b, 1), config.crop_low_deg)
  high = _uniform(next(keys), (b, 1), config.crop_high_deg)
  x = jnp.where(on(config.crop_prob), crop(x, low, high), x)
  applied = on(config.apply_prob)
  x = jnp.where(applied, x, simulated)
  return jnp.where(unmeasured, constants.UNMEASURED_INTENSITY, x), applied[:, 0]
