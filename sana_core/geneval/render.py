"""Scene rendering for GenEval-Shapes (geneval.md §6.1) and the degradations used for noisy data and calibration.

A scene is a list of `Obj(shape, color, cx, cy, side)`: each shape fills a square box of side `side` centred at the
continuous point (cx, cy) (pixels, y down). `render()` composites every object's anti-aliased coverage α
(`shapes.coverage`, 4×4 supersampling) over a flat background: pixel = α·colour + (1−α)·BG, rounded to uint8. Scenes
built by `place_boxes` keep ≥ `min_gap` px between boxes, so objects never overlap.

Degradations (`degrade`): Gaussian blur σ (px), additive Gaussian noise (std in 8-bit units, e.g. 4.0 = 4/255), and a
per-image per-channel colour shift; `jitter_colors` shifts each object's colour per channel by an integer in [−k, k]
(the doc's training-only ±10 jitter, and the ±15 calibration jitter). Everything random takes a numpy Generator, so a
scene, an image and a degradation are reproducible from a seed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .shapes import coverage
from .world import BG, PALETTE, SHAPES, WorldConfig, world_config


@dataclass(frozen=True)
class Obj:
    """One object: `shape` in SHAPES, `color` in COLORS, box centre (cx, cy) and side in pixels.
    `rgb` overrides the palette colour (colour jitter); None = the palette colour of `color`."""

    shape: str
    color: str
    cx: float
    cy: float
    side: float
    rgb: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["rgb"] is None:
            del d["rgb"]
        else:
            d["rgb"] = list(d["rgb"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Obj":
        rgb = d.get("rgb")
        return cls(d["shape"], d["color"], float(d["cx"]), float(d["cy"]), float(d["side"]),
                   tuple(int(v) for v in rgb) if rgb is not None else None)

    @property
    def box(self) -> tuple[float, float, float, float]:
        h = self.side / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


def _size_hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def obj_coverage(obj: Obj, size, supersample: int = 4) -> np.ndarray:
    return coverage(obj.shape, obj.cx, obj.cy, obj.side, _size_hw(size), supersample)


def render_float(objs, size=64, bg=BG, supersample: int = 4) -> np.ndarray:
    """float64 [H, W, 3] in 8-bit units: α·colour + (1−α)·bg, objects composited in list order."""
    H, W = _size_hw(size)
    img = np.empty((H, W, 3), np.float64)
    img[:] = np.asarray(bg, np.float64)
    for o in objs:
        if o.shape not in SHAPES:
            raise ValueError(f"render: unknown shape {o.shape!r}; choose from {list(SHAPES)}")
        if o.rgb is None and o.color not in PALETTE:
            raise ValueError(f"render: unknown colour {o.color!r}; choose from {list(PALETTE)}")
        col = np.asarray(o.rgb if o.rgb is not None else PALETTE[o.color], np.float64)
        a = obj_coverage(o, (H, W), supersample).astype(np.float64)[..., None]
        img = a * col + (1.0 - a) * img
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(objs, size=64, bg=BG, supersample: int = 4) -> np.ndarray:
    """uint8 [H, W, 3] image of a scene (see module docstring)."""
    return to_uint8(render_float(objs, size, bg, supersample))


def core_box(obj: Obj, size=64, supersample: int = 4) -> list[int] | None:
    """The box the evaluator sees: [x0, y0, x_last+1, y_last+1] of the pixels with coverage ≥ 0.5 (mmdet mask2bbox
    convention on the α ≥ 0.5 core, geneval.md §6.4). None if no pixel reaches 0.5."""
    m = obj_coverage(obj, size, supersample) >= 0.5
    if not m.any():
        return None
    ys, xs = np.nonzero(m)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# ---------------------------------------------------------------------------------------------------------------- layout
def boxes_ok(objs, world: WorldConfig) -> bool:
    """Every box ≥ min_gap px from the border and from every other box (axis-aligned square boxes)."""
    S, g = world.image_size, world.min_gap
    eps = 1e-9
    for i, a in enumerate(objs):
        x0, y0, x1, y1 = a.box
        if x0 < g - eps or y0 < g - eps or x1 > S - g + eps or y1 > S - g + eps:
            return False
        for b in objs[:i]:
            need = (a.side + b.side) / 2 + g - eps
            if abs(a.cx - b.cx) < need and abs(a.cy - b.cy) < need:
                return False
    return True


def place_boxes(n: int, rng: np.random.Generator, world: WorldConfig, max_tries: int = 200,
                max_restarts: int = 200) -> list[tuple[float, float, float]]:
    """n boxes (cx, cy, side): side ~ U[size_min, size_max], centres uniform where the box keeps `min_gap` from the
    border, rejection-sampled so boxes keep `min_gap` between them. Restarts the whole scene when one box finds no
    room after `max_tries`."""
    if n < 0 or n > world.max_objects:
        raise ValueError(f"place_boxes: n={n} outside [0, max_objects={world.max_objects}]")
    S, g = world.image_size, world.min_gap
    for _ in range(max_restarts):
        placed: list[tuple[float, float, float]] = []
        for _ in range(n):
            for _ in range(max_tries):
                s = float(rng.uniform(world.size_min, world.size_max))
                lo, hi = g + s / 2, S - g - s / 2
                cx, cy = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
                if all(max(abs(cx - px), abs(cy - py)) >= (s + ps) / 2 + g for px, py, ps in placed):
                    placed.append((cx, cy, s))
                    break
            else:
                break
        if len(placed) == n:
            return placed
    raise RuntimeError(f"place_boxes: could not place {n} boxes on a {S}px canvas (sizes {world.size_min}-"
                       f"{world.size_max}, gap {world.min_gap})")


def random_scene(shapes_colors, rng: np.random.Generator, world: WorldConfig | None = None) -> list[Obj]:
    """Place the given [(shape, colour), ...] anywhere (gaps respected)."""
    world = world or world_config()
    boxes = place_boxes(len(shapes_colors), rng, world)
    return [Obj(s, c, cx, cy, side) for (s, c), (cx, cy, side) in zip(shapes_colors, boxes)]


# ---------------------------------------------------------------------------------------------------------- degradations
def jitter_colors(objs, rng: np.random.Generator, k: int) -> list[Obj]:
    """Shift each object's colour by an independent integer in [−k, k] per channel (clipped to [0, 255])."""
    if k < 0:
        raise ValueError(f"jitter_colors: k={k} must be ≥ 0")
    if k == 0:
        return list(objs)
    out = []
    for o in objs:
        base = np.asarray(o.rgb if o.rgb is not None else PALETTE[o.color], np.int64)
        rgb = np.clip(base + rng.integers(-k, k, size=3, endpoint=True), 0, 255)
        out.append(replace(o, rgb=tuple(int(v) for v in rgb)))
    return out


def degrade(img: np.ndarray, rng: np.random.Generator | None = None, blur: float = 0.0, noise: float = 0.0,
            color_shift: int = 0) -> np.ndarray:
    """Image-level degradations of a uint8 [H, W, 3] image, applied in this order:
    Gaussian blur of std `blur` px (per channel, edges replicated), a per-image per-channel shift by an integer in
    [−color_shift, color_shift] (background included), additive N(0, noise²) noise in 8-bit units. Returns uint8."""
    if blur < 0 or noise < 0 or color_shift < 0:
        raise ValueError(f"degrade: blur={blur}, noise={noise}, color_shift={color_shift} must be ≥ 0")
    if (noise > 0 or color_shift > 0) and rng is None:
        raise ValueError("degrade: noise / color_shift need a numpy Generator `rng`")
    x = np.asarray(img, np.float64)
    if blur > 0:
        from scipy.ndimage import gaussian_filter
        x = gaussian_filter(x, sigma=(blur, blur, 0), mode="nearest")
    if color_shift > 0:
        x = x + rng.integers(-color_shift, color_shift, size=3, endpoint=True)
    if noise > 0:
        x = x + rng.normal(0.0, noise, size=x.shape)
    return to_uint8(x)
