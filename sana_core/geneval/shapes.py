"""Anti-aliased shape coverage (geneval.md §6.1): each shape fills a square box, no rotation.

`coverage()` returns, per pixel, the exact fraction of a 4×4 (supersample²) grid of sub-samples inside the shape, so a
rendered pixel is α·colour + (1−α)·background. The same rasteriser produces the evaluator's templates
(analysis-by-synthesis), so renderer and detector agree by construction.
Coordinates: pixel (row i, col j) covers [j, j+1) × [i, i+1); y grows downwards.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from matplotlib.path import Path

from .world import SHAPES

RING_INNER = 0.55   # inner radius / outer radius
CROSS_ARM = 1.0 / 3.0  # arm width / side


def _star_polygon() -> np.ndarray:
    ang = -np.pi / 2 + np.arange(10) * np.pi / 5          # apex up
    r_in = np.sin(np.pi / 10) / np.sin(7 * np.pi / 10)    # regular pentagram inner radius (≈0.382)
    rad = np.where(np.arange(10) % 2 == 0, 1.0, r_in)
    pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - (lo + hi) / 2) / ((hi - lo) / 2)         # stretch to fill [-1, 1]²


_STAR = Path(_star_polygon())


def _heart_raw(x, y):  # classic implicit heart, y up: (x²+y²−1)³ − x²y³ ≤ 0
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


@lru_cache(maxsize=1)
def _heart_box() -> tuple[float, float, float, float]:
    """Extent of the heart on a 3001² grid over [-1.5, 1.5]². The heart is connected and contains the origin, so
    its projection on each axis is an interval: bisect on grid lines (same values as the full-grid min/max, ~1000×
    fewer evaluations than the 9M-point grid)."""
    g = np.linspace(-1.5, 1.5, 3001)
    c = len(g) // 2                                   # g[c] == 0, inside the heart

    def hit_col(k):
        return bool(_heart_raw(g[k], g).any())

    def hit_row(k):
        return bool(_heart_raw(g, g[k]).any())

    def edge(hit, step):                              # last grid index from the centre outwards that still hits
        lo, hi = c, (len(g) - 1 if step > 0 else 0)
        if hit(hi):
            return hi
        while abs(hi - lo) > 1:                       # invariant: hit(lo), not hit(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if hit(mid) else (lo, mid)
        return lo
    return (float(g[edge(hit_col, -1)]), float(g[edge(hit_col, 1)]),
            float(g[edge(hit_row, -1)]), float(g[edge(hit_row, 1)]))


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask: is box-normalised point (u, v) ∈ [-1, 1]² (v down) inside `shape`?"""
    au, av = np.abs(u), np.abs(v)
    inbox = (au <= 1) & (av <= 1)
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "square":
        return inbox
    if shape == "triangle":                   # apex (0, -1), base v = 1
        return inbox & (au <= (v + 1) / 2)
    if shape == "diamond":
        return au + av <= 1
    if shape == "cross":
        return inbox & ((au <= CROSS_ARM) | (av <= CROSS_ARM))
    if shape == "star":
        pts = np.stack([u.ravel(), v.ravel()], 1)
        return inbox & _STAR.contains_points(pts).reshape(u.shape)
    if shape == "heart":
        x0, x1, y0, y1 = _heart_box()
        x = x0 + (u + 1) / 2 * (x1 - x0)
        y = y1 - (v + 1) / 2 * (y1 - y0)      # v down -> y up
        return inbox & _heart_raw(x, y)
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= RING_INNER ** 2)
    raise ValueError(f"unknown shape {shape!r}; choose from {list(SHAPES)}")


def coverage(shape: str, cx: float, cy: float, side: float, size: int | tuple[int, int],
             supersample: int = 4) -> np.ndarray:
    """Coverage in [0, 1] of `shape` with square box centred at (cx, cy) and side `side` on an H×W canvas."""
    H, W = (size, size) if isinstance(size, int) else size
    out = np.zeros((H, W), np.float32)
    half = side / 2
    j0, j1 = max(int(np.floor(cx - half)), 0), min(int(np.ceil(cx + half)), W)
    i0, i1 = max(int(np.floor(cy - half)), 0), min(int(np.ceil(cy + half)), H)
    if j1 <= j0 or i1 <= i0:
        return out
    ss = supersample
    sub = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(j0, j1)[:, None] + sub[None]).ravel()
    ys = (np.arange(i0, i1)[:, None] + sub[None]).ravel()
    U, V = np.meshgrid((xs - cx) / half, (ys - cy) / half)
    m = inside(shape, U, V).astype(np.float32)
    out[i0:i1, j0:j1] = m.reshape(i1 - i0, ss, j1 - j0, ss).mean(axis=(1, 3))
    return out


@lru_cache(maxsize=None)
def template_stats(shape: str, n: int = 801) -> tuple[float, tuple[float, float]]:
    """(area fraction of the box, centroid offset from the box centre as a fraction of the side (dx, dy))."""
    g = (np.arange(n) + 0.5) / n * 2 - 1
    U, V = np.meshgrid(g, g)
    m = inside(shape, U, V)
    area = float(m.mean())
    off = (float(U[m].mean()) / 2, float(V[m].mean()) / 2)
    return area, off
