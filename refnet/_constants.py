"""Numerical constants shared across refnet (defined once).

EPS : float64 machine epsilon 2⁻⁵² (the unit roundoff is EPS/2 = 2⁻⁵³ under round-to-nearest).
"""
import numpy as np

EPS = float(np.finfo(np.float64).eps)
