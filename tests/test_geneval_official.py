"""The real-GenEval evaluator (sana_core/geneval/{official,mask2former,official_score}.py): GenEval's rules on
hand-built detections (each expected answer with its reason from evaluate_images.py @ af4902f), mmdet's instance
fusion on hand-built logits, the summary arithmetic, and the plumbing end to end with tiny random Mask2Former / CLIP
models built here (structure and determinism; the score is whatever random models say)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sana_core.geneval.evaluate import TASKS, summary
from sana_core.geneval.official import (COCO_CLASSES, DETECTOR_NAMES, Det, colour_queries, compute_iou, details,
                                        judge, keep_detections)

pytestmark = pytest.mark.usefixtures("one_thread")


def D(box, score, color=None):
    return Det(tuple(float(v) for v in box), float(score), None, color)


def single(cls):
    return {"tag": "single_object", "include": [{"class": cls, "count": 1}], "prompt": f"a photo of a {cls}"}


def counting(cls, n):
    return {"tag": "counting", "include": [{"class": cls, "count": n}], "exclude": [{"class": cls, "count": n + 1}],
            "prompt": f"a photo of {n} {cls}s"}


def position(a, rel, b):
    return {"tag": "position", "include": [{"class": b, "count": 1},
                                           {"class": a, "count": 1, "position": [rel, 0]}], "prompt": "p"}


def color_attr(x, c1, y, c2):
    return {"tag": "color_attr", "include": [{"class": x, "count": 1, "color": c1},
                                             {"class": y, "count": 1, "color": c2}], "prompt": "p"}


def run(per_class, meta, **kw):
    """GenEval's evaluate_image minus the models: filter for the tag, then evaluate()."""
    return judge(keep_detections(per_class, meta["tag"], **kw), meta)


# ------------------------------------------------------------------------------------------------ classes and names
def test_coco_classes_are_geneval_object_names(shared_geneval):
    names = (shared_geneval.parent / "object_names.txt").read_text().splitlines()
    assert list(COCO_CLASSES) == names                   # mmdet label order; GenEval maps by line position
    assert len(set(COCO_CLASSES)) == 80
    assert set(DETECTOR_NAMES) <= set(COCO_CLASSES)      # the three prompt names renamed from COCO's


# -------------------------------------------------------------------------------------------- thresholds and filtering
def test_threshold_is_strict_and_counting_uses_0_9():
    dets = {"dog": [D([0, 0, 10, 10], 0.3), D([20, 0, 30, 10], 0.31), D([40, 0, 50, 10], 0.9),
                    D([60, 0, 70, 10], 0.91)]}
    # L233: score > threshold, strictly: 0.3 itself is dropped under THRESHOLD = 0.3
    assert [d.score for d in keep_detections(dets, "single_object")["dog"]] == [0.91, 0.9, 0.31]
    # L230: tag == "counting" → COUNTING_THRESHOLD = 0.9 for every class, 0.9 itself dropped
    assert [d.score for d in keep_detections(dets, "counting")["dog"]] == [0.91]
    # mmdet's scores are float32 and numpy compares them with 0.3 in float32: 0.3000000119 (= float32(0.3)) is dropped
    assert keep_detections({"dog": [D([0, 0, 1, 1], float(np.float32(0.3)))]}, "single_object") == {}
    # ties: GenEval's np.argsort(scores)[::-1] puts the later row first
    a, b = D([0, 0, 1, 1], 0.8), D([5, 5, 9, 9], 0.8)
    assert keep_detections({"dog": [a, b]}, "single_object")["dog"] == [b, a]
    # a class with nothing above the threshold is dropped from `detected` (L244-245)
    assert keep_detections({"cat": [D([0, 0, 1, 1], 0.2)]}, "two_object") == {}


def test_sorted_by_score_and_capped_at_16():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 1.0, 20)
    kept = keep_detections({"cup": [D([i, 0, i + 5, 5], s) for i, s in enumerate(scores)]}, "single_object")["cup"]
    # L231-234: argsort descending, then the first MAX_OBJECTS = 16
    assert [d.score for d in kept] == sorted(scores, reverse=True)[:16]


def test_iou_is_pixel_inclusive():
    # L131: area = (x2 − x1 + 1)(y2 − y1 + 1): [0,0,9,9] and [5,0,14,9] are 10×10 each, intersection 5×10 → 50/150
    assert compute_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(1 / 3)
    assert compute_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
    assert compute_iou([0, 0, 4, 4], [10, 10, 14, 14]) == 0.0


def test_nms_off_by_default_duplicates_count():
    twins = {"dog": [D([0, 0, 9, 9], 0.95), D([0, 0, 9, 9], 0.94), D([1, 0, 10, 9], 0.93)]}
    # max_overlap = 1.0 (L241 `NMS_THRESHOLD == 1`): nothing is suppressed, three dogs
    assert len(keep_detections(twins, "counting")["dog"]) == 3
    # "two dogs" then fails on the exclude {dog, 3}: the official tool counts duplicate masks of one dog
    assert run(twins, counting("dog", 2)) == (False, "expected dog<3, found 3")
    # with max_overlap = 0.5: greedy NMS keeps the top box and drops boxes with IoU ≥ 0.5 against it
    # (IoU([0,0,9,9],[1,0,10,9]) = 90/110 = 0.82) → one dog
    assert len(keep_detections(twins, "counting", nms_threshold=0.5)["dog"]) == 1
    # a box with IoU below the threshold survives: [5,0,14,9] has IoU 1/3 < 0.5
    far = {"dog": [D([0, 0, 9, 9], 0.95), D([5, 0, 14, 9], 0.94)]}
    assert len(keep_detections(far, "counting", nms_threshold=0.5)["dog"]) == 2


# ------------------------------------------------------------------------------------------------------ every task
def test_single_object_pass_and_fail():
    assert run({"bench": [D([0, 0, 5, 5], 0.4)]}, single("bench")) == (True, "")
    # the only bench is below 0.3 → include {bench, 1} finds 0 (L177-179)
    assert run({"bench": [D([0, 0, 5, 5], 0.25)]}, single("bench")) == (False, "expected bench>=1, found 0")
    # other classes are ignored: a confident extra dog does not hurt
    assert run({"bench": [D([0, 0, 5, 5], 0.4)], "dog": [D([9, 9, 20, 20], 0.99)]}, single("bench"))[0]


def test_two_object_and_of_includes():
    meta = {"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "sports ball", "count": 1}],
            "prompt": "a photo of a bench and a sports ball"}
    assert run({"bench": [D([0, 0, 5, 5], 0.5)], "sports ball": [D([9, 9, 12, 12], 0.5)]}, meta) == (True, "")
    assert run({"bench": [D([0, 0, 5, 5], 0.5)]}, meta) == (False, "expected sports ball>=1, found 0")


def test_counting_is_exactly_n_above_0_9():
    three = [D([i * 10, 0, i * 10 + 8, 8], s) for i, s in enumerate([0.99, 0.95, 0.92])]
    # three clocks above 0.9: include {clock, 3} holds, exclude {clock, 4} does not fire
    assert run({"clock": three}, counting("clock", 3)) == (True, "")
    # "two clocks" with three confident clocks: the exclude {clock, 3} fires (L215-219)
    assert run({"clock": three}, counting("clock", 2)) == (False, "expected clock<3, found 3")
    # a third clock at 0.85 is below COUNTING_THRESHOLD → only two counted → "two clocks" holds
    assert run({"clock": three[:2] + [D([40, 0, 48, 8], 0.85)]}, counting("clock", 2)) == (True, "")
    # ... and "three clocks" then fails its include
    assert run({"clock": three[:2] + [D([40, 0, 48, 8], 0.85)]}, counting("clock", 3)) == \
        (False, "expected clock>=3, found 2")
    # 20 confident clocks are capped at 16 (MAX_OBJECTS) before the exclude: "four clocks" fails with found 16
    many = [D([i, 0, i + 3, 3], 0.95) for i in range(20)]
    assert run({"clock": many}, counting("clock", 4)) == (False, "expected clock<5, found 16")


def test_colors_checks_only_the_most_confident_object():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}],
            "prompt": "a photo of a red car"}
    dets = keep_detections({"car": [D([0, 0, 9, 9], 0.6, "red"), D([20, 0, 29, 9], 0.8, "blue")]}, "colors")
    # only the top-`count` car (the blue one, 0.8) is classified (L176, L183): a lower-ranked red car does not rescue
    assert [d.score for _, d in colour_queries(dets, meta)] == [0.8]
    assert judge(dets, meta) == (False, "expected red car>=1, found 0 red; and 1 blue")
    dets["car"][0].color = "red"
    assert judge(dets, meta) == (True, "")
    # no car at all: the count check fails first and CLIP is never asked
    assert colour_queries({}, meta) == []
    assert judge({}, meta) == (False, "expected car>=1, found 0")


def test_color_attr_two_objects_each_with_its_colour():
    meta = color_attr("wine glass", "purple", "apple", "black")
    dets = keep_detections({"wine glass": [D([0, 0, 9, 9], 0.7)], "apple": [D([20, 0, 29, 9], 0.5)]}, "color_attr")
    assert [cls for cls, _ in colour_queries(dets, meta)] == ["wine glass", "apple"]
    with pytest.raises(ValueError, match="no colour"):          # judge refuses unclassified colour queries
        judge(dets, meta)
    dets["wine glass"][0].color, dets["apple"][0].color = "purple", "black"
    assert judge(dets, meta) == (True, "")
    # swapped bindings: both includes fail, reasons in include order, newline-joined (L220)
    dets["wine glass"][0].color, dets["apple"][0].color = "black", "purple"
    assert judge(dets, meta) == (False, "expected purple wine glass>=1, found 0 purple; and 1 black\n"
                                        "expected black apple>=1, found 0 black; and 1 purple")
    # one colour right is not enough (includes are ANDed)
    dets["wine glass"][0].color = "purple"
    assert judge(dets, meta)[0] is False


def test_position_margin_top1_and_missing_target():
    meta = position("dog", "right of", "teddy bear")
    bear = D([0, 0, 16, 16], 0.9)
    # centres 7 px apart, 16-px boxes: shrunk offset 7 − 0.1·32 = 3.8, 3.8/7 = 0.543 > 0.5 → "right of"
    assert run({"teddy bear": [bear], "dog": [D([7, 0, 23, 16], 0.9)]}, meta) == (True, "")
    # 6 px apart: 2.8/6 = 0.467 → no relation at all
    assert run({"teddy bear": [bear], "dog": [D([6, 0, 22, 16], 0.9)]}, meta) == \
        (False, "expected dog right of target, found  target")
    # only the top-1 dog is compared with the top-1 bear: a weaker dog on the wrong side does not matter
    assert run({"teddy bear": [bear], "dog": [D([40, 0, 56, 16], 0.9), D([-40, 0, -24, 16], 0.5)]}, meta)[0]
    # a diagonal dog (right and below) still satisfies "right of" (the relation set has two members)
    assert run({"teddy bear": [bear], "dog": [D([40, 40, 56, 56], 0.9)]}, meta)[0]
    # no bear: group 0 failed, the dog has no target (L195-197)
    assert run({"dog": [D([40, 0, 56, 16], 0.9)]}, meta) == \
        (False, "expected teddy bear>=1, found 0\nno target for dog to be right of")


def test_details_rows():
    dets = keep_detections({"cup": [D([1, 2, 3, 4], 0.5), D([5, 6, 7, 8], 0.7)]}, "single_object")
    assert details(dets) == {"cup": [[5.0, 6.0, 7.0, 8.0, 0.7], [1.0, 2.0, 3.0, 4.0, 0.5]]}


# ------------------------------------------------------------------------------------------------------- summary
def test_summary_is_mean_of_task_means():
    # GenEval README check: SD v1.5 task scores (0.97, 0.38, 0.35, 0.76, 0.04, 0.06) → overall 0.4267
    rows = [{"tag": t, "correct": i < k} for t, k in zip(TASKS, [97, 38, 35, 76, 4, 6]) for i in range(100)]
    s = summary(pd.DataFrame(rows))
    assert s["overall"] == pytest.approx(0.426667, abs=1e-6) and s["counting"] == pytest.approx(0.35)
    # unequal image counts: per-tag means first (summary_scores.py L40-45), not the pooled share
    rows = [{"tag": "single_object", "correct": True}] * 4 + [{"tag": "counting", "correct": i < 2} for i in range(8)]
    s = summary(pd.DataFrame(rows))
    assert s["overall"] == pytest.approx((1.0 + 0.25) / 2)      # pooled would be 6/12 = 0.5
    assert s["two_object"] is None and s["n_images"] == 12


# ------------------------------------------------------------------------------------------- mmdet instance fusion
def test_fuse_instances_matches_mmdet_rules():
    from sana_core.geneval.mask2former import fuse_instances
    # 3 queries × 2 classes (+ no-object). Query 0 is split between classes 0 and 1; query 2 has an empty mask.
    cls = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]))
    masks = torch.full((3, 6, 8), -2.0)
    masks[0, 1:4, 2:6] = 2.0          # rows 1..3, cols 2..5 → box [2, 1, 6, 4]
    masks[1, 0, 0] = 0.0              # logit 0 is not > 0: empty binary mask
    out = fuse_instances(cls, masks)
    sig2 = 1 / (1 + np.exp(-2.0))     # mean mask probability inside the binary mask
    got = [(lab, round(s, 6), b.tolist()) for lab, s, b, _ in out]
    # softmax(log p) = p; score = class prob × mask score; query 1 and query 2 have empty masks → score 0 → dropped
    assert got == [(0, round(0.6 * sig2, 6), [2.0, 1.0, 6.0, 4.0]), (1, round(0.3 * sig2, 6), [2.0, 1.0, 6.0, 4.0])]
    assert out[0][3].sum() == 12 and out[0][3].dtype == torch.bool
    # min_score drops the weaker (label 1, 0.264) detection
    assert [lab for lab, *_ in fuse_instances(cls, masks, min_score=0.3)] == [0]
    # the top-k cut is on class probability *before* the mask score (mmdet): k = 1 keeps only (query 2, class 0,
    # p 0.9), whose mask is empty → nothing; k = 2 adds (query 0, class 0, p 0.6)
    assert fuse_instances(cls, masks, max_per_image=1) == []
    assert [lab for lab, *_ in fuse_instances(cls, masks, max_per_image=2)] == [0]


def test_label_map_by_name_and_refusal():
    from sana_core.geneval.mask2former import label_map
    names = [DETECTOR_NAMES.get(c, c) for c in COCO_CLASSES]
    rev = {i: n for i, n in enumerate(reversed(names))}          # another order: mapped by name, not position
    m = label_map(rev, "cfg")
    assert m[0] == "toothbrush" and m[79 - COCO_CLASSES.index("computer mouse")] == "computer mouse"
    with pytest.raises(ValueError, match=r"cfg: id2label lacks 80 of GenEval's 80 COCO classes"):
        label_map({i: f"LABEL_{i}" for i in range(80)}, "cfg")


# ----------------------------------------------------------------------------------- tiny models, end to end
SMALL = (64, 96)     # tiny-model resize for speed; the default is GenEval's mmdet scale (800, 1333)
TINY_PROMPTS = TASKS     # one real prompt per task


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Random Mask2Former (tiny Swin, COCO id2label) and CLIP (word-level tokenizer) saved as local folders."""
    from helpers import write_tiny_geneval_models
    return write_tiny_geneval_models(tmp_path_factory.mktemp("tiny_geneval_models"))


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory, shared_geneval):
    """A GenEval-layout folder with one real prompt per tag (the first 'dog' prompt where there is one), 2 noise
    images each (64×64 and 48×80: sizes need not match)."""
    from sana_core.geneval.layout import read_metadata_jsonl, write_prompt_folder
    metas = read_metadata_jsonl(shared_geneval)
    chosen = []
    for tag in TINY_PROMPTS:
        of_tag = [(i, m) for i, m in enumerate(metas) if m["tag"] == tag]
        dog = [(i, m) for i, m in of_tag if any(r["class"] == "dog" for r in m["include"])]
        chosen.append((dog or of_tag)[0])
    out = tmp_path_factory.mktemp("real_layout")
    rng = np.random.default_rng(0)
    for i, m in chosen:
        write_prompt_folder(out, i, m, [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                                        rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)])
    return out, chosen


def test_score_real_layout_end_to_end(tiny_models, real_layout, tmp_path):
    from sana_core.geneval.official_score import score_folder
    det, clip = tiny_models
    folder, chosen = real_layout
    df, summ = score_folder(folder, det, clip, batch_size=3, device="cpu", out_results=tmp_path / "a" / "results.jsonl",
                            out_summary=tmp_path / "a" / "summary.json", scale=SMALL)
    # GenEval's results.jsonl: read back the way summary_scores.py reads it
    back = pd.read_json(tmp_path / "a" / "results.jsonl", orient="records", lines=True)
    assert list(back.columns) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert len(back) == 12 and back["correct"].dtype == bool
    assert back.groupby("metadata").ngroups == 6                      # "% correct prompts" groups by metadata
    assert [json.loads(s) for s in back["metadata"][::2]] == [m for _, m in chosen]
    assert list(back["tag"][::2]) == list(TINY_PROMPTS)
    assert [Path(f).name for f in back["filename"]] == ["00000.png", "00001.png"] * 6
    for _, r in back.iterrows():
        size = (64, 64) if r["filename"].endswith("00000.png") else (80, 48)   # (W, H)
        thr = 0.9 if r["tag"] == "counting" else 0.3
        for cls, rows in json.loads(r["details"]).items():
            assert cls in COCO_CLASSES and 1 <= len(rows) <= 16
            scores = [row[4] for row in rows]
            assert scores == sorted(scores, reverse=True) and min(scores) > thr
            for x1, y1, x2, y2, _ in rows:
                assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
        assert r["correct"] == (r["reason"] == "")
    # the dog bias makes detections, so CLIP was asked: the colour prompts end in a colour verdict, not a count
    assert any("dog" in json.loads(d) for d in back["details"])
    col = back[back["tag"].isin(["colors", "color_attr"])]
    assert any("dog" in p for p in col["prompt"])
    assert all(c or "; and 1 " in r for c, r in zip(col["correct"], col["reason"]))
    assert set(summ) == {"overall", *TINY_PROMPTS, "n_images"} and summ["n_images"] == 12
    assert summ == summary(back)
    # deterministic: the same run again writes the same bytes
    score_folder(folder, det, clip, batch_size=3, device="cpu", out_results=tmp_path / "b" / "results.jsonl",
                 out_summary=tmp_path / "b" / "summary.json", scale=SMALL)
    assert (tmp_path / "a" / "results.jsonl").read_bytes() == (tmp_path / "b" / "results.jsonl").read_bytes()
    # another batch size: same verdicts and boxes, scores equal up to float batching noise
    df5, _ = score_folder(folder, det, clip, batch_size=5, device="cpu", out_results=tmp_path / "c" / "r.jsonl",
                          out_summary=tmp_path / "c" / "s.json", scale=SMALL)
    assert list(df5["correct"]) == list(df["correct"]) and list(df5["reason"]) == list(df["reason"])
    for d3, d5 in zip(df["details"], df5["details"]):
        d3, d5 = json.loads(d3), json.loads(d5)
        assert d3.keys() == d5.keys()
        for k in d3:
            np.testing.assert_allclose(np.array(d3[k]), np.array(d5[k]), atol=1e-5)


def test_detector_input_is_mmdet_scale_padded_to_32(tiny_models, tmp_path):
    import shutil

    from PIL import Image

    from sana_core.geneval.mask2former import Detector
    # a hub-style legacy processor config (MaskFormerImageProcessor, size 384) loads; GenEval's scale overrides it
    shutil.copytree(tiny_models[0], tmp_path / "m2f")
    (tmp_path / "m2f" / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "ignore_index": 255, "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "MaskFormerImageProcessor", "image_std": [0.229, 0.224, 0.225],
        "reduce_labels": False, "resample": 2, "size": 384, "size_divisor": 32}))
    det = Detector(tmp_path / "m2f", "cpu")
    # 64×64 → shortest side 800 → 800×800 (already a multiple of 32)
    x, sizes = det._inputs([Image.new("RGB", (64, 64))])
    assert tuple(x.shape) == (1, 3, 800, 800) and sizes == [(800, 800)]
    # W 80 × H 48: scale min(800/48, 1333/80) → 800 × 1333 (longest capped at 1333), zero-padded to 800 × 1344
    x, sizes = det._inputs([Image.new("RGB", (80, 48), (255, 255, 255))])
    assert tuple(x.shape) == (1, 3, 800, 1344) and sizes == [(800, 1333)]
    assert float(x[..., 1333:].abs().max()) == 0.0 and float(x[..., :1333].min()) > 2.0   # normalised white vs pad 0
    # mmcv rounds half up: 512 × 384 → 1067 × 800 (transformers' own resize would truncate to 1066), pad to 1088
    x, sizes = det._inputs([Image.new("RGB", (512, 384))])
    assert tuple(x.shape) == (1, 3, 800, 1088) and sizes == [(800, 1067)]


def test_colour_crop_and_zero_shot_head(tiny_models):
    from PIL import Image

    from sana_core.geneval.mask2former import ColorClassifier, colour_crop
    from sana_core.geneval.world import COLORS
    img = Image.new("RGB", (10, 8), (200, 10, 10))
    mask = np.zeros((8, 10), bool)
    mask[3:5, 2:4] = True
    crop = np.asarray(colour_crop(img, Det((2.0, 3.0, 6.0, 7.0), 0.9, mask)))
    # ImageCrops: the image through the mask onto #999, then cropped to the box (W 4 × H 4)
    assert crop.shape == (4, 4, 3)
    assert (crop[:2, :2] == [200, 10, 10]).all() and (crop[2:, :] == 153).all() and (crop[:, 2:] == 153).all()
    with pytest.raises(ValueError, match="does not match image"):
        colour_crop(img, Det((0, 0, 2, 2), 0.9, np.zeros((3, 3), bool)))
    # zero_shot_classifier: per colour the renormalised mean of the 3 normalised template embeddings
    clf = ColorClassifier(tiny_models[1], "cpu")
    W = clf.head("dog")
    assert tuple(W.shape) == (16, 10) and torch.allclose(W.norm(dim=0), torch.ones(10), atol=1e-5)
    tok = clf.tokenizer(["a photo of a blue dog", "a photo of a blue-colored dog", "a photo of a blue object"],
                        padding=True, return_tensors="pt")
    with torch.no_grad():
        t = clf.model.get_text_features(**tok)
    t = torch.nn.functional.normalize(getattr(t, "pooler_output", t), dim=-1).mean(0)
    assert torch.allclose(W[:, COLORS.index("blue")], t / t.norm(), atol=1e-5)
    # prediction = argmax of normalize(image embedding) · W, one per crop, any batch size
    crops = [Image.new("RGB", (12, 9), tuple(int(v) for v in np.random.default_rng(i).integers(0, 256, 3)))
             for i in range(5)]
    px = clf.processor(images=crops, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        e = clf.model.get_image_features(pixel_values=px)
    e = torch.nn.functional.normalize(getattr(e, "pooler_output", e), dim=-1)
    want = [COLORS[int(i)] for i in (e @ W).argmax(1)]
    assert clf(crops, ["dog"] * 5) == want
    clf.batch_size = 2
    assert clf(crops, ["dog"] * 5) == want


def test_cli_geneval_evaluator(tiny_models, real_layout, tmp_path, capsys):
    from flows.cli import main
    det, clip = tiny_models
    folder, _ = real_layout
    out = tmp_path / "s.json"
    assert main(["geneval-score", "--evaluator", "geneval", "--detector", str(det), "--clip", str(clip),
                 "--batch-size", "4", "--device", "cpu", "--out", str(out), str(folder)]) == 0
    assert "overall" in capsys.readouterr().out
    assert json.loads(out.read_text())["n_images"] == 12 and (tmp_path / "results.jsonl").is_file()
    # missing model paths: exit 2, the message names the option, nothing written
    bad = tmp_path / "bad"
    assert main(["geneval-score", "--evaluator", "geneval", "--clip", str(clip), "--out", str(bad / "s.json"),
                 str(folder)]) == 2
    assert "--detector" in capsys.readouterr().err and not bad.exists()
    assert main(["geneval-score", "--evaluator", "geneval", "--detector", str(det), "--clip", str(tmp_path / "nope"),
                 "--out", str(bad / "s.json"), str(folder)]) == 2
    assert "--clip" in capsys.readouterr().err and not bad.exists()


# ------------------------------------------------------------------------------------------------------ bad input
def test_bad_input_named_before_compute(tiny_models, tmp_path):
    from sana_core.geneval.layout import write_prompt_folder
    from sana_core.geneval.official_score import score_folder
    det, clip = tiny_models
    img = [np.zeros((8, 8, 3), np.uint8)]
    # not GenEval layout: images straight in the folder, no digit-named prompt folders
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "0.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"flat: not in GenEval layout: no digit-named prompt folders"):
        score_folder(flat, det, clip)
    # a prompt folder without metadata.jsonl
    (tmp_path / "nometa" / "00000" / "samples").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"00000/metadata.jsonl"):
        score_folder(tmp_path / "nometa", det, clip)
    # a class that is not one of GenEval's COCO classes (a GenEval-Shapes prompt)
    write_prompt_folder(tmp_path / "shapes", 0, single("circle"), img)
    with pytest.raises(ValueError, match=r"00000/metadata.jsonl: include\[0\] class 'circle' is not one of GenEval"):
        score_folder(tmp_path / "shapes", det, clip)
    # a broken image is named before any model runs
    write_prompt_folder(tmp_path / "broken", 3, single("dog"), img)
    (tmp_path / "broken" / "00003" / "samples" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"00003/samples/00000.png: cannot read image"):
        score_folder(tmp_path / "broken", det, clip)
    # missing model folders name the option; a folder without config.json too
    good = tmp_path / "good"
    write_prompt_folder(good, 0, single("dog"), img)
    with pytest.raises(FileNotFoundError, match="--detector"):
        score_folder(good, None, clip)
    with pytest.raises(FileNotFoundError, match="--clip"):
        score_folder(good, det, tmp_path)
    # a detector whose labels are not COCO's is refused by name
    from sana_core.geneval.mask2former import Detector
    import shutil
    other = tmp_path / "m2f_other"
    shutil.copytree(det, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(80)}
    cfg["label2id"] = {f"LABEL_{i}": i for i in range(80)}
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"--detector: .*config.json: id2label lacks 80"):
        Detector(other, "cpu")
    assert not (good / "results.jsonl").exists() and not (good / "summary.json").exists()


# ----------------------------------------------------------------------------------- evaluator selection, agreement
def test_evaluator_for_source_and_scorer(tiny_models, real_layout, tmp_path):
    from sana_core.geneval.evaluators import evaluator_for, make_scorer
    from sana_core.geneval.world import world_config
    assert evaluator_for("shapes") == "shapes"
    assert evaluator_for("webdataset") == "geneval" and evaluator_for("imagefolder") == "geneval"
    with pytest.raises(ValueError, match="data.source"):
        evaluator_for("")
    det, clip = tiny_models
    # the stage's hook: model folders are checked when the scorer is made (before generation), named by params key
    with pytest.raises(FileNotFoundError, match=r"geneval.detector: None"):
        make_scorer("geneval", detector=None, clip=clip)
    with pytest.raises(FileNotFoundError, match=r"geneval.clip"):
        make_scorer("geneval", detector=det, clip=tmp_path / "none")
    with pytest.raises(ValueError, match="evaluator: 'mmdet'"):
        make_scorer("mmdet")
    score = make_scorer("geneval", detector=det, clip=clip, batch_size=2, device="cpu")
    df, summ = score(real_layout[0], out_results=tmp_path / "r.jsonl", out_summary=tmp_path / "s.json")
    assert len(df) == 12 and json.loads((tmp_path / "s.json").read_text()) == summ
    # shapes: the exact evaluator refuses a COCO prompt (its world has no 'dog')
    with pytest.raises(ValueError, match="is not a shape of the world"):
        make_scorer("shapes", world=world_config(64))(real_layout[0], out_results=tmp_path / "x.jsonl",
                                                      out_summary=tmp_path / "x.json")


def test_agreement_per_image_and_task(tmp_path):
    from sana_core.geneval.agreement import compare_results

    def write(path, rows):
        pd.DataFrame(rows).to_json(path, orient="records", lines=True)

    meta = [json.dumps(single("dog")), json.dumps(counting("cup", 2))]
    ours = [{"filename": f"/a/0000{p}/samples/0000{k}.png", "tag": t, "prompt": "p", "correct": c, "reason": "",
             "metadata": meta[p], "details": "{}"}
            for p, t, k, c in [(0, "single_object", 0, True), (0, "single_object", 1, False),
                               (1, "counting", 0, True), (1, "counting", 1, True)]]
    theirs = [dict(r, filename=r["filename"].replace("/a/", "/elsewhere/imgs/")) for r in ours]
    theirs[1]["correct"] = True                      # one disagreement, in single_object
    write(tmp_path / "ours.jsonl", ours)
    write(tmp_path / "theirs.jsonl", theirs[::-1])   # record order does not matter (GenEval: os.listdir order)
    rep = compare_results(tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl")
    assert rep["n_images"] == 4 and rep["agreement"] == 0.75
    assert rep["tasks"]["single_object"] == {"n": 2, "agreement": 0.5, "score_a": 0.5, "score_b": 1.0}
    assert rep["tasks"]["counting"]["agreement"] == 1.0
    assert rep["overall_a"] == pytest.approx(0.75) and rep["overall_b"] == pytest.approx(1.0)
    assert rep["disagreements"] == [{"key": "00000/00001.png", "tag": "single_object", "prompt": "p",
                                     "a": False, "b": True, "reason_a": "", "reason_b": ""}]
    write(tmp_path / "short.jsonl", theirs[:3])
    with pytest.raises(ValueError, match="short.jsonl.*missing 1 image"):
        compare_results(tmp_path / "ours.jsonl", tmp_path / "short.jsonl")
    # the command: table on stdout, full report as JSON; a bad pair exits 2 naming the file
    from flows.cli import main
    assert main(["geneval-compare", str(tmp_path / "ours.jsonl"), str(tmp_path / "theirs.jsonl"),
                 "--out", str(tmp_path / "agree.json")]) == 0
    assert json.loads((tmp_path / "agree.json").read_text()) == json.loads(json.dumps(rep))
    assert main(["geneval-compare", str(tmp_path / "ours.jsonl"), str(tmp_path / "short.jsonl")]) == 2
