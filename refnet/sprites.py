"""A procedural dSprites-like data set (after Matthey et al. 2017, the dSprites data set of
Higgins et al. 2017), rendered by vectorised point-in-shape tests: no download.

Five ground-truth factors, each an integer index drawn uniformly and independently:

=============  =======  =====================================================================
factor         values   meaning
=============  =======  =====================================================================
shape          3        0 square  max(|u|, |v|) ≤ 0.8;  1 ellipse  u² + (v/0.5)² ≤ 1;
                        2 heart  (a² + b² − 1)³ − a² b³ ≤ 0 with (a, b) = 1.3·(u, v)
scale          4        radius r = 0.10, 0.13, 0.16, 0.19 (image side = 1)
orientation    8        angle k·2π/8 (as in dSprites, the square repeats with period 2 and the
                        ellipse with period 4: those images coincide; the factor is kept)
pos_x, pos_y   n_pos    centre on the grid linspace(0.25, 0.75, n_pos) (default 8)
=============  =======  =====================================================================

A pixel (centre p in [0, 1]², row = y, column = x) is on (1.0) iff its local coordinates
(u, v) = R(−angle)(p − c) / r satisfy the shape's test, else off (0.0). Images are
flattened row-major to ``(n, size·size)``.
"""
from __future__ import annotations

import numpy as np

from ._validate import as_rng, check_positive_int

__all__ = ["sprites", "render", "FACTOR_NAMES", "SCALES", "N_SHAPES", "N_ORIENTATIONS"]

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
SCALES = (0.10, 0.13, 0.16, 0.19)
N_SHAPES = 3
N_ORIENTATIONS = 8


def _sizes(n_pos):
    return (N_SHAPES, len(SCALES), N_ORIENTATIONS, n_pos, n_pos)


def render(factors, *, size: int = 16, n_pos: int = 8) -> np.ndarray:
    """Images ``(n, size·size)`` in {0, 1} of integer ``factors`` ``(n, 5)`` (columns as
    :data:`FACTOR_NAMES`), vectorised over examples and pixels."""
    size = check_positive_int(size, "size", minimum=4)
    n_pos = check_positive_int(n_pos, "n_pos", minimum=1)
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != 5 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors: expected an integer array of shape (n, 5); received "
                         f"shape {f.shape} dtype {f.dtype}")
    hi = np.array(_sizes(n_pos))
    if np.any(f < 0) or np.any(f >= hi):
        raise ValueError(f"factors: expected 0 <= factors[:, j] < {tuple(hi)}; received "
                         f"min {f.min(0).tolist()} max {f.max(0).tolist()}")
    grid = np.linspace(0.25, 0.75, n_pos) if n_pos > 1 else np.array([0.5])
    r = np.asarray(SCALES)[f[:, 1]][:, None, None]
    ang = (2 * np.pi / N_ORIENTATIONS) * f[:, 2][:, None, None]
    cx, cy = grid[f[:, 3]][:, None, None], grid[f[:, 4]][:, None, None]
    c = (np.arange(size) + 0.5) / size
    px, py = c[None, None, :] - cx, c[None, :, None] - cy          # (n, size, size)
    cos, sin = np.cos(ang), np.sin(ang)
    u = (cos * px + sin * py) / r
    v = (-sin * px + cos * py) / r
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.8
    ellipse = u ** 2 + (v / 0.5) ** 2 <= 1.0
    a, b = 1.3 * u, -1.3 * v                                        # heart points "up" (−y)
    heart = (a ** 2 + b ** 2 - 1) ** 3 - a ** 2 * b ** 3 <= 0.0
    s = f[:, 0][:, None, None]
    img = np.where(s == 0, square, np.where(s == 1, ellipse, heart))
    return img.reshape(f.shape[0], size * size).astype(np.float64)


def sprites(n: int, *, size: int = 16, n_pos: int = 8, seed=0):
    """``n`` sprites with factors drawn uniformly and independently from ``seed``.

    Returns
    -------
    images : ``(n, size·size)`` float64 in {0, 1} (row-major ``size × size`` images)
    factors : ``(n, 5)`` int64, columns :data:`FACTOR_NAMES`
    factor_names : tuple of str
    """
    n = check_positive_int(n, "n")
    n_pos = check_positive_int(n_pos, "n_pos", minimum=1)
    rng = as_rng(seed)
    factors = np.stack([rng.integers(0, k, size=n) for k in _sizes(n_pos)], axis=1)
    factors = factors.astype(np.int64)
    return render(factors, size=size, n_pos=n_pos), factors, FACTOR_NAMES
