"""The GenEval-Shapes world: vocabulary, palette and scale (geneval.md §6.1, §6.5).

GenEval's ten colour names in GenEval's order and eight shapes in a fixed order; a `WorldConfig` selects the
image size and, optionally, a sub-vocabulary (the tiny CPU profile may use fewer, more distinct shapes/colours;
the full 8 × 10 world at 64 px stays available).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (250, 140, 0), "yellow": (245, 225, 20), "green": (30, 160, 50),
    "blue": (30, 70, 225), "purple": (130, 40, 190), "pink": (250, 150, 210), "brown": (110, 60, 20),
    "black": (10, 10, 10), "white": (250, 250, 250),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star", "heart", "ring")
BG: tuple[int, int, int] = (128, 128, 128)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class WorldConfig:
    """Scale and vocabulary of one GenEval-Shapes world. Defaults = the 64 px world of geneval.md §6.5."""

    image_size: int = 64
    size_min: float = 12.0          # box side s ~ U[size_min, size_max] px
    size_max: float = 20.0
    min_gap: float = 2.0            # px between boxes and from the border
    max_objects: int = 4
    supersample: int = 4
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = COLORS
    # evaluator constants that depend on the scale (§6.5)
    min_area: int = 20
    sigma_bank: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self):
        bad = [s for s in self.shapes if s not in SHAPES]
        if bad:
            raise ValueError(f"world.shapes: unknown shape(s) {bad}; choose from {list(SHAPES)}")
        bad = [c for c in self.colors if c not in COLORS]
        if bad:
            raise ValueError(f"world.colors: unknown colour(s) {bad}; choose from {list(COLORS)}")
        if self.image_size not in (32, 64) and self.image_size % 32:
            raise ValueError(f"world.image_size: {self.image_size} must be a multiple of 32")
        if not (0 < self.size_min <= self.size_max < self.image_size):
            raise ValueError(f"world.size_min/size_max: need 0 < {self.size_min} <= {self.size_max} < image_size")

    def to_dict(self) -> dict:
        return asdict(self)


def world_config(size: int = 64, **overrides) -> WorldConfig:
    """The doc's 64 px world, or the 32 px variant (s in [7, 11], 6 shapes without star/heart, blur bank ≤ 0.7)."""
    if size == 64:
        base = {}
    elif size == 32:
        base = dict(image_size=32, size_min=7.0, size_max=11.0, min_area=6, sigma_bank=(0.0, 0.35, 0.7),
                    shapes=tuple(s for s in SHAPES if s not in ("star", "heart")))
    else:
        raise ValueError(f"world.image_size: {size} not supported (64 or 32)")
    base.update(overrides)
    for k in ("shapes", "colors", "sigma_bank"):
        if k in base and base[k] is not None:
            base[k] = tuple(base[k])
    return WorldConfig(**base)


def world_from_dict(d: dict) -> WorldConfig:
    """A WorldConfig from its `to_dict()` (as stored in data/shapes/world.json["world"] and model folders'
    sana15.json["world"]); unknown keys raise ValueError."""
    d = dict(d)
    unknown = sorted(set(d) - set(WorldConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"world: unknown key(s) {unknown}")
    size = int(d.pop("image_size", 64))
    return world_config(size, **d)


def load_world(path) -> WorldConfig:
    """The world of a data stage's `world.json` (or of a bare WorldConfig dict); errors name the file."""
    import json
    from pathlib import Path
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"world file not found: {p}")
    try:
        d = json.loads(p.read_text())
        return world_from_dict(d["world"] if isinstance(d.get("world"), dict) else d)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{p}: not a GenEval-Shapes world ({e})") from None
