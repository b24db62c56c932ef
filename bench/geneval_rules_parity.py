"""Rule parity with the official GenEval code: our `official.keep_detections` + `official.judge` vs GenEval's own
`evaluate_image` / `evaluate` / `relative_position`, on random detections, with the detector and CLIP stubbed.

    .venv/bin/python bench/geneval_rules_parity.py --geneval /path/to/djghosh13/geneval [--n 6000] [--seed 0]

The official functions are read from `<geneval>/evaluation/evaluate_images.py` (a checkout of djghosh13/geneval; only
those four functions are compiled, so neither mmdet nor open_clip is needed) and run in their own namespace with
GenEval's default options. Per trial: a random prompt of `../shared/geneval/evaluation_metadata.jsonl` (or
`--prompts`), per class 0–5 random float32 boxes whose scores include the exact threshold values 0.3 / 0.9 and the
0.85–0.95 band; each box gets a colour (half of them the requested one). The stubbed `inference_detector` returns
these rows; the stubbed `color_classification` returns the boxes' colours. Compared per image: `correct`, `reason`
(relation lists compared as sets: GenEval joins a Python set) and `details`. Prints identical / total.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sana_core.geneval.layout import read_metadata_jsonl  # noqa: E402
from sana_core.geneval.official import COCO_CLASSES, Det, colour_queries, details, judge, keep_detections  # noqa: E402
from sana_core.geneval.world import COLORS  # noqa: E402

OFFICIAL_FUNCTIONS = ("compute_iou", "relative_position", "evaluate", "evaluate_image")


def official_namespace(geneval: Path) -> dict:
    path = geneval / "evaluation" / "evaluate_images.py"
    if not path.is_file():
        raise SystemExit(f"--geneval: {path} not found (a checkout of djghosh13/geneval)")
    tree = ast.parse(path.read_text())
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in OFFICIAL_FUNCTIONS]
    ns = {"np": np, "json": json, "Image": Image, "ImageOps": ImageOps, "THRESHOLD": 0.3, "COUNTING_THRESHOLD": 0.9,
          "MAX_OBJECTS": 16, "NMS_THRESHOLD": 1.0, "POSITION_THRESHOLD": 0.1, "classnames": list(COCO_CLASSES),
          "object_detector": None, "COLORS": list(COLORS)}
    exec(compile(ast.Module(body=fns, type_ignores=[]), str(path), "exec"), ns)
    return ns


def norm_reason(reason: str) -> list[str]:
    out = []
    for line in reason.split("\n"):
        if " target, found " in line:
            head, tail = line.split(" target, found ")
            line = head + "|" + "|".join(sorted(tail[:-len(" target")].split(" and ")))
        out.append(line)
    return out


def random_rows(rng, meta) -> list[np.ndarray]:
    bbox = [np.zeros((0, 5), np.float32) for _ in COCO_CLASSES]
    for cls in [r["class"] for r in meta["include"]] + [COCO_CLASSES[rng.integers(80)]]:
        rows = []
        for _ in range(rng.integers(0, 6 if meta["tag"] == "counting" else 4)):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(5, 60, 2)
            s = rng.choice([rng.uniform(0, 1), rng.uniform(0.85, 0.95), 0.3, 0.9])
            rows.append([round(x, 1), round(y, 1), round(x + w, 1), round(y + h, 1), s])
        if rows:
            i = COCO_CLASSES.index(cls)
            bbox[i] = np.concatenate([bbox[i], np.array(rows, np.float32)])
    return bbox


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--geneval", required=True, type=Path, help="checkout of djghosh13/geneval")
    ap.add_argument("--prompts", type=Path, default=ROOT.parent / "shared/geneval/evaluation_metadata.jsonl")
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ns = official_namespace(args.geneval)
    metas = read_metadata_jsonl(args.prompts)
    colours: dict = {}
    key = lambda row: tuple(np.round(np.asarray(row[:5], np.float32), 6))   # noqa: E731
    ns["color_classification"] = lambda image, objs, cls: [colours[key(o[0])] for o in objs]
    rng = np.random.default_rng(args.seed)
    same = correct = 0
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "x.png"
        Image.new("RGB", (256, 256)).save(img)
        for _ in range(args.n):
            meta = metas[rng.integers(len(metas))]
            bbox = random_rows(rng, meta)
            want = next((q["color"] for q in meta["include"] if "color" in q), "red")
            for arr in bbox:
                for r in arr:
                    colours[key(r)] = COLORS[rng.integers(10)] if rng.uniform() < 0.5 else want
            ns["inference_detector"] = lambda det, path, bbox=bbox: bbox
            off = ns["evaluate_image"](str(img), meta)
            per_class = {c: [Det(tuple(float(v) for v in r[:4]), float(r[4])) for r in bbox[i]]
                         for i, c in enumerate(COCO_CLASSES) if len(bbox[i])}
            kept = keep_detections(per_class, meta["tag"])
            for _, d in colour_queries(kept, meta):
                d.color = colours[key([*d.box, d.score])]
            ok, reason = judge(kept, meta)
            ours_details = {k: [[float(np.float32(v)) for v in row] for row in rows]
                            for k, rows in details(kept).items()}
            match = (ok == off["correct"] and norm_reason(reason) == norm_reason(off["reason"])
                     and json.loads(off["details"]) == ours_details)
            same += match
            correct += bool(off["correct"])
            if not match and args.n - same <= 3:
                print("differs:", meta["prompt"], (ok, reason), (off["correct"], off["reason"]))
    print(f"{'images':<10} {'identical':>10} {'official correct':>17}")
    print(f"{args.n:<10} {same:>10} {correct:>17}")
    return 0 if same == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
