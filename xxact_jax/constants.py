"""Constants shared by data, models, training and inference (no heavy imports)."""

import numpy as np

# XRD grid of the paper: Cu Kα, 2θ from 5° to 90° (exclusive) in steps of 0.02° -> 4250 points.
TWO_THETA_MIN = 5.0
TWO_THETA_MAX = 90.0
TWO_THETA_STEP = 0.02
NUM_XRD_POINTS = 4250
XRD_SIGMA = 0.1
XRD_WAVELENGTH = "CuKa"
# Cu anode lines in Å: the 2:1 weighted Kα mean the patterns are simulated at, Kα1, Kα2.
CU_KA_LINES = (1.54184, 1.54056, 1.54439)
XRD_MAX_INTENSITY = 100.0
# Grid points a measured scan did not cover hold this value (the predict path, and the crop
# augmentation that teaches it): unlike 0 it does not read as "measured, no peak here".
UNMEASURED_INTENSITY = -100.0
XRD_NUM_TOKENS = 17
XRD_TOKEN_SIZE = 250
assert XRD_NUM_TOKENS * XRD_TOKEN_SIZE == NUM_XRD_POINTS


def two_theta_grid() -> np.ndarray:
  """The 4250-point 2θ grid, 5 + 0.02·i (float64)."""
  return TWO_THETA_MIN + TWO_THETA_STEP * np.arange(NUM_XRD_POINTS, dtype=np.float64)


# The targets are defined in targets.py (kinds, classes, label offsets, units); their names are
# re-exported here for the modules that only need the lists.
from xxact_jax.targets import (  # noqa: E402  pylint: disable=g-import-not-at-top,unused-import
    ALL_TARGETS, CLASSIFICATION_TARGETS, CRYSTAL_SYSTEMS, NUM_SPACE_GROUPS,  # noqa: F401
    REGRESSION_TARGETS, TARGET_UNITS)  # noqa: F401

# Element symbols, index + 1 = atomic number; 0 is the padding id.
ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm "
    "Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U "
    "Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og").split()
NUM_ELEMENTS = len(ELEMENTS)  # 118
ATOMIC_NUMBER = {sym: i + 1 for i, sym in enumerate(ELEMENTS)}
