"""Batched, jit-compiled powder XRD simulator in JAX.

Crystal structures (lattice, fractional coordinates, atomic numbers, occupancies) -> reflections
inside 5-90° 2θ -> intensities with pymatgen XRDCalculator's physics and constants (its atomic
scattering parameters, Lorentz-polarisation factor, merging of equal-2θ reflections, relative
cut-off) -> the 4,250-point pattern smeared as xrd.smear_sticks, max 100.

Imported by xxact_jax only to prepare datasets; its diffraction physics is xxact_jax/physics.py,
shared with data/resimulate.py. pymatgen is needed only for its scattering
table (read from pymatgen's own JSON at first use) and for structures_to_batch / simulate.
"""

from xxact_jax.xrd_engine.engine import Result
from xxact_jax.xrd_engine.engine import simulate
from xxact_jax.xrd_engine.engine import simulate_arrays
from xxact_jax.xrd_engine.engine import simulate_planned
from xxact_jax.xrd_engine.engine import structure_arrays
from xxact_jax.xrd_engine.engine import structures_to_batch
from xxact_jax.xrd_engine.planning import XRDEngineError
from xxact_jax.xrd_engine.planning import plan_structure
from xxact_jax.xrd_engine.planning import plan_structures
from xxact_jax.xrd_engine.planning import reflections
from xxact_jax.xrd_engine.sample import SampleEffects
from xxact_jax.xrd_engine.sample import random_effects
from xxact_jax.xrd_engine.sample import symmetric_strain

__all__ = ["Result", "SampleEffects", "XRDEngineError", "plan_structure", "plan_structures",
           "random_effects", "reflections", "simulate", "simulate_arrays", "simulate_planned",
           "structure_arrays", "structures_to_batch", "symmetric_strain"]
