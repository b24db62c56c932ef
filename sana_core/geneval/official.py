"""GenEval's rules for real images (djghosh13/geneval @ af4902f, `evaluation/evaluate_images.py`; geneval.md §4).

The per-image decision is split as in the official script, minus the models (those are in `mask2former.py`):
1. `keep_detections(per_class, tag)` = the per-class filtering of `evaluate_image` (L230-245): threshold
   THRESHOLD = 0.3, or COUNTING_THRESHOLD = 0.9 when the tag is `counting`, strict `>` in float32 (mmdet's score
   dtype); sort by score descending with GenEval's own `np.argsort(...)[::-1]` (so ties break the same way);
   keep the first MAX_OBJECTS = 16; greedy NMS at NMS_THRESHOLD (1.0 = off, GenEval's default; IoU with the
   pixel-inclusive +1 of `compute_iou`, L130-137); classes left empty are dropped.
2. `colour_queries(detected, metadata)`: the objects GenEval hands to CLIP — for each `include` requirement with a
   colour, the class's top-`count` kept detections (L176, L181-183), only when there are at least `count` of them
   (the colour check runs only after the count check passed). The classifier fills in `Det.color`.
3. `evaluate.evaluate(detected, metadata)` — the one implementation of GenEval's `evaluate()` in this project
   (includes ANDed, excludes ORed, top-`count`, count → colour → position, `matched_groups`, reasons) — reads
   `Det.box` for `relative_position` and `Det.color` for the colour check.

`COCO_CLASSES` are GenEval's `object_names.txt` (the 80 COCO thing classes in mmdet's label order, with its three
prompt names `computer mouse`, `tv remote`, `computer keyboard`); `DETECTOR_NAMES` maps those to the COCO names a
detector's `id2label` uses. `COLOR_TEMPLATES` are the three zero-shot templates of `color_classification` (L114-116).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .evaluate import MAX_OBJECTS, evaluate
from .world import COLORS

THRESHOLD = 0.3              # detection score floor, strict > (option `threshold`)
COUNTING_THRESHOLD = 0.9     # the floor when tag == "counting" (option `counting_threshold`)
NMS_THRESHOLD = 1.0          # greedy per-class NMS IoU (option `max_overlap`); 1.0 disables it
BGCOLOR = (153, 153, 153)    # "#999": what is outside an object's mask in its colour crop
COLOR_TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
DETECTOR_NAMES = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}


@dataclass
class Det:
    """One kept detection: box [x1, y1, x2, y2] (x2/y2 exclusive, mmdet `mask2bbox`), score, binary mask at image
    size (None where the detector gives none), colour once classified."""
    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = field(default=None, repr=False)
    color: str | None = None

    def to_row(self) -> list[float]:
        """GenEval's `details` row [x1, y1, x2, y2, score]."""
        return [*(float(v) for v in self.box), float(self.score)]


def threshold_for(tag: str) -> float:
    return COUNTING_THRESHOLD if tag == "counting" else THRESHOLD


def compute_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """GenEval's IoU: pixel-inclusive areas (x2 − x1 + 1)·(y2 − y1 + 1); 0 when the union is empty."""
    def area(x):
        return max(x[2] - x[0] + 1, 0) * max(x[3] - x[1] + 1, 0)
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def keep_detections(per_class: Mapping[str, Sequence[Det]], tag: str, threshold: float | None = None,
                    max_objects: int = MAX_OBJECTS, nms_threshold: float = NMS_THRESHOLD) -> dict[str, list[Det]]:
    """class → kept detections, descending score (see the module docstring, step 1)."""
    thr = np.float32(threshold_for(tag) if threshold is None else threshold)
    out: dict[str, list[Det]] = {}
    for cls, dets in per_class.items():
        # as L231-234 on mmdet's float32 rows: np.argsort(scores)[::-1] (ties: the later row first), then
        # score > threshold compared in float32 (numpy casts the Python threshold to the array's dtype)
        scores = np.array([d.score for d in dets], np.float32)
        order = [dets[i] for i in np.argsort(scores)[::-1] if scores[i] > thr][:max_objects]
        kept: list[Det] = []
        while order:
            best = order.pop(0)
            kept.append(best)
            if nms_threshold != 1:
                order = [d for d in order if compute_iou(best.box, d.box) < nms_threshold]
        if kept:
            out[cls] = kept
    return out


def colour_queries(detected: Mapping[str, Sequence[Det]], metadata: Mapping[str, Any]) -> list[tuple[str, Det]]:
    """(class, detection) pairs whose colour GenEval's `evaluate()` asks CLIP for (module docstring, step 2); a
    detection asked twice appears once."""
    out, seen = [], set()
    for req in metadata.get("include", []):
        if "color" not in req:
            continue
        found = list(detected.get(req["class"], []))[:int(req["count"])]
        if len(found) < int(req["count"]):
            continue
        for d in found:
            if id(d) not in seen:
                seen.add(id(d))
                out.append((req["class"], d))
    return out


def judge(detected: Mapping[str, Sequence[Det]], metadata: Mapping[str, Any]) -> tuple[bool, str]:
    """GenEval's `evaluate()` on kept, colour-classified detections (ValueError if a queried colour is missing)."""
    for cls, d in colour_queries(detected, metadata):
        if d.color not in COLORS:
            raise ValueError(f"judge: detection of {cls!r} at {list(d.box)} has no colour from {list(COLORS)} "
                             f"(got {d.color!r}); run the colour classifier on colour_queries() first")
    return evaluate(detected, metadata)


def check_classes(metadata: Mapping[str, Any], where: str) -> None:
    """Every class a prompt names must be one of GenEval's 80 COCO classes (ValueError naming `where` otherwise)."""
    for part in ("include", "exclude"):
        for i, req in enumerate(metadata.get(part, [])):
            if req.get("class") not in COCO_CLASSES:
                raise ValueError(f"{where}: {part}[{i}] class {req.get('class')!r} is not one of GenEval's 80 COCO "
                                 f"classes (object_names.txt), e.g. {list(COCO_CLASSES[:3])}")


def details(detected: Mapping[str, Sequence[Det]]) -> dict[str, list[list[float]]]:
    """GenEval's `details`: class → kept rows [x1, y1, x2, y2, score]."""
    return {cls: [d.to_row() for d in dets] for cls, dets in detected.items()}
