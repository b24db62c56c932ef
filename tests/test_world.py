"""GenEval-Shapes world: renderer, prompts, held-out splits, layout, dataset builder, `sana15 geneval-render`."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sana_core.geneval import BG, COLORS, PALETTE, SHAPES, world_config
from sana_core.geneval.dataset import DEFAULT_DATA_CFG, build_dataset, load_images, load_manifest
from sana_core.geneval.evaluate import relative_position
from sana_core.geneval.layout import iter_layout, read_metadata_jsonl, write_metadata_jsonl, write_prompt_folder
from sana_core.geneval.prompts import (TAGS, TrainingSampler, enumerate_prompts, generate_suite, make_plural,
                                       meta_position, phrase, scene_for_metadata, shapes_suite, with_article)
from sana_core.geneval.render import Obj, boxes_ok, core_box, degrade, jitter_colors, render
from sana_core.geneval.shapes import coverage
from sana_core.geneval.splits import HeldOut, calibration_prompts, eval_comp, eval_iid, is_comp, is_iid

W64 = world_config(64)

# the held-out rules of geneval.md §6.7, written out independently of splits.py
def _bad_binding(c, s):
    return (COLORS.index(c) + SHAPES.index(s)) % 5 == 0


def _bad_pair(a, b):
    i, j = SHAPES.index(a), SHAPES.index(b)
    return j == (i + 3) % 8 or i == (j + 3) % 8


def _bad_count(s, n):
    return n in (2, 3, 4) and (SHAPES.index(s) + n) % 3 == 0


def _scene_violations(objs):
    v = [("binding", o.color, o.shape) for o in objs if _bad_binding(o.color, o.shape)]
    shapes = sorted({o.shape for o in objs})
    v += [("pair", a, b) for a in shapes for b in shapes if a < b and _bad_pair(a, b)]
    cnt = Counter(o.shape for o in objs)
    v += [("count", s, n) for s, n in cnt.items() if _bad_count(s, n)]
    return v


def _shapes_named(caption: str) -> list[str]:
    """Shapes (with multiplicity) a training caption names, parsed back from the words."""
    from sana_core.geneval.world import NUMBERS
    words = caption.replace(",", "").split()[3:]
    out, n = [], 1
    for w in words:
        if w in NUMBERS:
            n = NUMBERS.index(w)
        for s in SHAPES:
            if w in (s, make_plural(s)):
                out += [s] * n
                n = 1
    return out


def _hash_dir(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


# ------------------------------------------------------------------------------------------------------- renderer
def test_render_deterministic_per_seed():
    sampler = TrainingSampler(W64)
    a = render(sampler.sample(np.random.default_rng(7), "multi_object").objs)
    b = render(sampler.sample(np.random.default_rng(7), "multi_object").objs)
    c = render(sampler.sample(np.random.default_rng(8), "multi_object").objs)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert degrade(a, rng1, blur=1.0, noise=4.0, color_shift=15).tobytes() == \
        degrade(a, rng2, blur=1.0, noise=4.0, color_shift=15).tobytes()


@pytest.mark.parametrize("shape", SHAPES)
def test_render_pixels_are_alpha_blend(shape):
    o = Obj(shape, "blue", 30.37, 27.81, 17.3)
    img = render([o])
    a = coverage(shape, o.cx, o.cy, o.side, 64).astype(np.float64)[..., None]
    want = np.rint(a * np.array(PALETTE["blue"]) + (1 - a) * np.array(BG)).astype(np.uint8)
    assert np.array_equal(img, want)
    assert (a > 0).any() and (a < 1).any() and ((a > 0) & (a < 1)).any()       # anti-aliased edge exists
    assert np.array_equal(img[0, 0], BG)                                     # far from the object
    assert set(np.unique(a)) <= {k / 16 for k in range(17)}                  # 4×4 supersampling levels


def test_scenes_keep_gaps_and_never_overlap():
    sampler = TrainingSampler(W64)
    n4 = 0
    for i in range(150):
        objs = sampler.sample(np.random.default_rng(i), "multi_object" if i % 2 else None).objs
        assert boxes_ok(objs, W64)
        n4 += len(objs) == 4
        for k, p in enumerate(objs):
            x0, y0, x1, y1 = p.box
            assert min(x0, y0) >= 2 - 1e-9 and max(x1, y1) <= 62 + 1e-9
            assert 12 <= p.side <= 20
            for q in objs[:k]:      # ≥ 2 px gap on at least one axis
                assert max(abs(p.cx - q.cx) - (p.side + q.side) / 2, abs(p.cy - q.cy) - (p.side + q.side) / 2) >= 2 - 1e-9
        cov = np.stack([coverage(o.shape, o.cx, o.cy, o.side, 64) for o in objs])
        assert ((cov > 0).sum(0) <= 1).all()
    assert n4 > 0


def test_32px_world():
    w = world_config(32)
    assert w.image_size == 32 and "star" not in w.shapes and "heart" not in w.shapes
    sampler = TrainingSampler(w, HeldOut())
    for i in range(40):
        ex = sampler.sample(np.random.default_rng(i))
        img = render(ex.objs, 32)
        assert img.shape == (32, 32, 3)
        assert boxes_ok(ex.objs, w) and all(7 <= o.side <= 11 and o.shape in w.shapes for o in ex.objs)


def test_jitter_and_degrade():
    objs = [Obj("square", "red", 20, 20, 16)]
    j = jitter_colors(objs, np.random.default_rng(0), 10)
    assert j[0].rgb is not None and np.abs(np.subtract(j[0].rgb, PALETTE["red"])).max() <= 10
    img = render(j)
    assert tuple(img[20, 20]) == j[0].rgb                         # interior pixel takes the jittered colour
    clean = render(objs)
    blurred = degrade(clean, blur=1.0)
    assert blurred[20, 20].tolist() == clean[20, 20].tolist()     # deep interior unchanged by σ=1 blur
    assert not np.array_equal(blurred, clean)
    noisy = degrade(clean, np.random.default_rng(0), noise=4.0)
    assert 3.0 < np.std(noisy.astype(float) - clean) < 5.0
    with pytest.raises(ValueError, match="rng"):
        degrade(clean, None, noise=1.0)


# --------------------------------------------------------------------------------------------------------- prompts
def test_grammar_quirks():
    assert with_article("orange") == "an orange" and with_article("umbrella") == "an umbrella"
    assert with_article("heart") == "a heart" and with_article("hour") == "a hour"     # first letter only
    assert phrase("circle", 1, "orange") == "an orange circle"
    assert make_plural("cross") == "crosses" and make_plural("sheep") == "sheeps" and make_plural("knife") == "knifes"
    assert make_plural("bus") == "buses" and make_plural("bench") == "benchs"
    prompts = {m["prompt"] for m in shapes_suite()}
    assert "a photo of three crosses" in prompts and "a photo of four stars" in prompts
    assert "a photo of an orange ring" in prompts and "a photo of a red circle" in prompts


def test_generate_suite_port_reproduces_real_geneval(shared_geneval):
    names = [l.strip() for l in open(shared_geneval.parent / "object_names.txt")]
    lines = [json.dumps(m) for m in generate_suite(names, np.random.default_rng(43))]
    assert lines == shared_geneval.read_text().splitlines()       # byte for byte, 553 lines


def test_shapes_suite_schema_and_counts():
    assert [len(enumerate_prompts(t)) for t in TAGS] == [8, 56, 24, 80, 224, 5040]
    suite = shapes_suite()
    assert Counter(m["tag"] for m in suite) == {"single_object": 8, "two_object": 56, "counting": 24,
                                                "colors": 80, "position": 100, "color_attr": 100}
    assert len({json.dumps(m) for m in suite}) == len(suite)
    assert suite == shapes_suite()                                 # deterministic in the seed
    for m in suite:
        keys = list(m)
        assert keys == (["tag", "include", "exclude", "prompt"] if m["tag"] == "counting" else ["tag", "include", "prompt"])
        for r in m["include"]:
            assert list(r)[:2] == ["class", "count"]
    cnt = next(m for m in suite if m["tag"] == "counting")
    assert cnt["exclude"] == [{"class": cnt["include"][0]["class"], "count": cnt["include"][0]["count"] + 1}]
    pos = meta_position("circle", "left of", "star")
    assert pos == {"tag": "position", "include": [{"class": "star", "count": 1},
                                                  {"class": "circle", "count": 1, "position": ["left of", 0]}],
                   "prompt": "a photo of a circle left of a star"}


def test_position_ground_truth_is_exact():
    for k, m in enumerate(enumerate_prompts("position")[::3]):       # 75 prompts, every relation
        objs = scene_for_metadata(m, np.random.default_rng(k), W64)
        b, a = objs                                                  # include order: B, then A
        assert (a.shape, b.shape) == (m["include"][1]["class"], m["include"][0]["class"])
        box_a, box_b = core_box(a), core_box(b)
        assert relative_position(box_a, box_b) == {m["include"][1]["position"][0]}
        # core box = tight box of coverage ≥ 0.5 pixels
        ys, xs = np.nonzero(coverage(a.shape, a.cx, a.cy, a.side, 64) >= 0.5)
        assert box_a == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_scene_for_metadata_satisfies_prompt():
    rng = np.random.default_rng(0)
    for m in shapes_suite():
        objs = scene_for_metadata(m, rng, W64)
        assert boxes_ok(objs, W64)
        assert len(objs) == sum(r["count"] for r in m["include"])
        for r in m["include"]:
            mine = [o for o in objs if o.shape == r["class"]]
            assert len(mine) == r["count"]
            if "color" in r:
                assert all(o.color == r["color"] for o in mine)
        for r in m.get("exclude", []):
            assert sum(o.shape == r["class"] for o in objs) < r["count"]
    with pytest.raises(ValueError, match="dog"):
        scene_for_metadata({"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "x"}, rng)


def test_training_captions_describe_scene_completely():
    sampler = TrainingSampler(W64, HeldOut())
    seen = Counter()
    for i in range(300):
        ex = sampler.sample(np.random.default_rng(i))
        seen[ex.tag] += 1
        assert ex.caption.startswith("a photo of ")
        # the described groups account for every object of the scene
        desc = Counter()
        for s, n, c in ex.groups:
            desc[s] += n
            if c is not None:
                assert sum(o.shape == s and o.color == c for o in ex.objs) == n
        assert desc == Counter(o.shape for o in ex.objs)
        if ex.tag == "position":
            a, rel, b = ex.relation
            oa = next(o for o in ex.objs if o.shape == a)
            ob = next(o for o in ex.objs if o.shape == b)
            assert relative_position(core_box(oa), core_box(ob)) == {rel}
    assert set(seen) == {"single_object", "two_object", "counting", "colors", "position", "color_attr", "multi_object"}
    ex = sampler.sample(np.random.default_rng(5), "multi_object")
    assert 3 <= len(ex.objs) <= 4


# ---------------------------------------------------------------------------------------------------------- splits
def test_training_scenes_never_contain_held_out_combinations():
    sampler = TrainingSampler(W64, HeldOut())
    bindings, shapes, counts, rels = set(), set(), set(), set()
    for i in range(2500):
        ex = sampler.sample(np.random.default_rng([11, i]))
        assert _scene_violations(ex.objs) == [], (ex.caption, ex.objs)
        bindings |= {(o.color, o.shape) for o in ex.objs}
        shapes |= {o.shape for o in ex.objs}
        counts |= set(Counter(o.shape for o in ex.objs).values())
        if ex.relation:
            rels.add(ex.relation[1])
    # combinations are held out, primitives are not: every shape, colour, count and relation is trained
    assert shapes == set(SHAPES) and {c for c, _ in bindings} == set(COLORS)
    assert counts == {1, 2, 3, 4} and len(rels) == 4
    assert len(bindings) == 64                                   # all 80 − 16 allowed bindings appear


def test_eval_sets_counts_and_membership():
    comp, iid = eval_comp(), eval_iid()
    assert Counter(m["tag"] for m in comp) == {"single_object": 8, "two_object": 16, "counting": 8, "colors": 16,
                                               "position": 64, "color_attr": 100}
    assert Counter(m["tag"] for m in iid) == {"single_object": 8, "two_object": 40, "counting": 16, "colors": 64,
                                              "position": 100, "color_attr": 100}
    assert sum(is_comp(m) for m in enumerate_prompts("color_attr")) == 212
    for m in comp:
        inc = m["include"]
        if m["tag"] in ("two_object", "position"):
            assert _bad_pair(inc[0]["class"], inc[1]["class"])
        elif m["tag"] == "counting":
            assert _bad_count(inc[0]["class"], inc[0]["count"])
        elif m["tag"] in ("colors", "color_attr"):
            assert all(_bad_binding(r["color"], r["class"]) for r in inc)
            if m["tag"] == "color_attr":
                assert inc[0]["class"] != inc[1]["class"] and inc[0]["color"] != inc[1]["color"]
    for m in iid:
        inc = m["include"]
        assert not any(_bad_binding(r["color"], r["class"]) for r in inc if "color" in r)
        assert not any(_bad_pair(a["class"], b["class"]) for a in inc for b in inc)
        if m["tag"] == "counting":
            assert not _bad_count(inc[0]["class"], inc[0]["count"])
    assert [m for m in comp if m["tag"] == "single_object"] == [m for m in iid if m["tag"] == "single_object"]
    cal = calibration_prompts()
    assert len(cal) == 100 and len({json.dumps(m) for m in cal}) == 100 and all(is_iid(m) for m in cal)
    assert set(Counter(m["tag"] for m in cal)) == set(TAGS) and min(Counter(m["tag"] for m in cal).values()) >= 8


def test_sub_vocabulary_and_empty_categories():
    # circle's only colours here are held out; the only pair is held out → many empty categories
    w = world_config(64, shapes=("circle", "diamond"), colors=("red", "purple"))
    comp = eval_comp(w)
    assert Counter(m["tag"] for m in comp) == {"single_object": 2, "two_object": 2, "colors": 2, "position": 8,
                                               "counting": 2}
    iid = eval_iid(w)
    assert Counter(m["tag"] for m in iid) == {"single_object": 2, "colors": 2, "counting": 4}
    sampler = TrainingSampler(w, HeldOut())
    assert sampler.shapes == ["diamond"]
    assert set(sampler.families) == {"single_object", "counting", "colors"}
    for i in range(50):
        ex = sampler.sample(np.random.default_rng(i))
        assert all(o.shape == "diamond" for o in ex.objs) and len(ex.objs) != 3     # (diamond, 3) held out
    with pytest.raises(ValueError, match="no caption family"):
        TrainingSampler(world_config(64, shapes=("circle",), colors=("red", "purple")), HeldOut())


# ---------------------------------------------------------------------------------------------------------- layout
def test_real_geneval_file_loads(shared_geneval):
    metas = read_metadata_jsonl(shared_geneval)
    assert len(metas) == 553
    assert Counter(m["tag"] for m in metas) == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                                                "position": 100, "color_attr": 100}


def test_layout_round_trip_and_reader_filters(tmp_path):
    metas = eval_comp()[:3]
    imgs = {}
    for i, m in enumerate(metas):
        imgs[i] = [render(scene_for_metadata(m, np.random.default_rng([i, k]))) for k in range(2)]
        write_prompt_folder(tmp_path, i, m, imgs[i], grid=(i == 0))
    raw = (tmp_path / "00000" / "metadata.jsonl").read_text()
    assert raw == json.dumps(metas[0]) and not raw.endswith("\n")
    assert (tmp_path / "00000" / "grid.png").exists()
    # noise the reader must ignore
    (tmp_path / "notes").mkdir()
    (tmp_path / "0001x").mkdir()
    (tmp_path / "00001" / "samples" / "grid.png").write_bytes(b"x")
    (tmp_path / "00001" / "samples" / "0001.jpg").write_bytes(b"x")
    (tmp_path / "00001" / "samples" / "a12.png").write_bytes(b"x")
    (tmp_path / "README.md").write_text("x")
    got = list(iter_layout(tmp_path))
    assert [g[0] for g in got] == [0, 1, 2]
    for idx, meta, samples in got:
        assert meta == metas[idx]
        assert [p.name for p, _ in samples] == ["00000.png", "00001.png"]
        for (p, im), want in zip(samples, imgs[idx]):
            assert np.array_equal(im, want)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no temp folders left
    write_prompt_folder(tmp_path, 1, metas[0], imgs[0][:1])                   # replace an index
    assert list(iter_layout(tmp_path))[1][1] == metas[0]
    assert len(list(iter_layout(tmp_path))[1][2]) == 1


def test_bad_metadata_errors_name_the_file(tmp_path):
    write_prompt_folder(tmp_path, 0, eval_comp()[0], [render([])])
    bad = tmp_path / "00000" / "metadata.jsonl"
    bad.write_text('{"tag": "single_object", "include": [')
    with pytest.raises(ValueError, match="00000/metadata.jsonl"):
        list(iter_layout(tmp_path))
    good = json.dumps(eval_comp()[0])
    cases = {
        "{not json": "malformed JSON",
        '{"tag": "single_object", "prompt": "x"}': "missing key 'include'",
        '{"tag": "nonsense", "include": [{"class": "circle", "count": 1}], "prompt": "x"}': "unknown tag",
        '{"tag": "counting", "include": [{"class": "circle", "count": "2"}], "prompt": "x"}': "'count' must be",
        '{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "teal"}], "prompt": "x"}': "color",
        '{"tag": "position", "include": [{"class": "circle", "count": 1, "position": ["near", 0]}], "prompt": "x"}':
            "position",
    }
    for line, msg in cases.items():
        p = tmp_path / "prompts.jsonl"
        p.write_text(good + "\n" + line + "\n")
        with pytest.raises(ValueError, match=f"prompts.jsonl:2: .*{msg}"):
            read_metadata_jsonl(p)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_metadata_jsonl(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------------------- dataset
SMALL = {"pool_size": 300, "noise": {"wrong_caption": 0.1, "incomplete_caption": 0.1, "blur": 0.05, "noise": 0.05,
                                     "color_jitter": 0.05}}


def test_dataset_deterministic_and_noisy(tmp_path):
    s1 = build_dataset(SMALL, tmp_path / "a")
    build_dataset(SMALL, tmp_path / "b")
    build_dataset(dict(SMALL, seed=1), tmp_path / "c")
    ha, hb, hc = _hash_dir(tmp_path / "a"), _hash_dir(tmp_path / "b"), _hash_dir(tmp_path / "c")
    assert set(ha) == {"images.npy", "manifest.csv", "eval_iid.jsonl", "eval_comp.jsonl", "calibration.jsonl",
                       "world.json"}
    assert ha == hb
    assert hc["images.npy"] != ha["images.npy"] and hc["eval_comp.jsonl"] == ha["eval_comp.jsonl"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    df, images = load_manifest(tmp_path / "a"), load_images(tmp_path / "a")
    assert images.shape == (300, 64, 64, 3) and images.dtype == np.uint8 and len(df) == 300
    assert {"caption", "tag", "objects", "split", "defect"} <= set(df.columns) and set(df.split) == {"train"}
    frac = df.defect.value_counts() / len(df)
    for d, f in SMALL["noise"].items():
        assert abs(frac.get(d, 0) - f) < 0.01, d
    assert s1["defects"]["none"] == 195
    for i, row in df.iterrows():
        objs = [Obj.from_dict(o) for o in json.loads(row.objects)]
        assert _scene_violations(objs) == []                         # hold-out applies to every training scene
        rerender = render(objs)
        if row.defect in ("none", "wrong_caption", "incomplete_caption", "color_jitter"):
            assert np.array_equal(images[i], rerender), (i, row.defect)
        else:                                                         # blur / noise: a degraded image
            assert not np.array_equal(images[i], rerender)
        if row.defect == "wrong_caption":
            assert row.caption != row.clean_caption
            assert sorted(o.shape for o in objs) != sorted(_shapes_named(row.caption))
        elif row.defect == "incomplete_caption":
            assert row.caption != row.clean_caption and row.n_objects >= 2
            named = Counter(_shapes_named(row.caption))
            assert sum(named.values()) == len(objs) - 1 and not named - Counter(o.shape for o in objs)
        else:
            assert row.caption == row.clean_caption
        assert sorted(_shapes_named(row.clean_caption)) == sorted(o.shape for o in objs)   # complete description
        if row.defect == "color_jitter":
            assert all(o.rgb is not None for o in objs)
    assert read_metadata_jsonl(tmp_path / "a" / "eval_comp.jsonl") == eval_comp()
    world = json.loads((tmp_path / "a" / "world.json").read_text())
    assert world["world"]["image_size"] == 64 and len(world["held_out"]["bindings"]) == 16


def test_dataset_config_errors_before_compute(tmp_path):
    out = tmp_path / "shapes"
    for cfg, key in [({"pool_sise": 10}, "data.pool_sise"), ({"noise": {"blurr": 0.1}}, "data.noise.blurr"),
                     ({"families": {"poem": 1}}, "data.families.poem"), ({"pool_size": "many"}, "data.pool_size"),
                     ({"noise": {"blur": 0.8, "noise": 0.5}}, "data.noise"),
                     ({"vocabulary": {"shapes": ["hexagon"]}}, "data.vocabulary"),
                     ({"object_size": [20, 16]}, "data.object_size"), ({"object_size": 16}, "data.object_size"),
                     ({"object_size": [16, 64]}, "data.object_size")]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            build_dataset(cfg, out)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert set(DEFAULT_DATA_CFG["noise"]) == {"wrong_caption", "incomplete_caption", "blur", "noise", "color_jitter"}


def test_dataset_sub_vocabulary_32px(tmp_path):
    cfg = {"image_size": 32, "pool_size": 40, "vocabulary": {"shapes": ["circle", "square", "ring"],
                                                             "colors": ["red", "blue", "white", "black"]}}
    stats = build_dataset(cfg, tmp_path / "s")
    df = load_manifest(tmp_path / "s")
    assert load_images(tmp_path / "s").shape == (40, 32, 32, 3) and stats["n_train"] == 40
    shapes = {o["shape"] for objs in df.objects for o in json.loads(objs)}
    assert shapes <= {"circle", "square", "ring"}
    comp = read_metadata_jsonl(tmp_path / "s" / "eval_comp.jsonl")
    assert {r["class"] for m in comp for r in m["include"]} <= {"circle", "square", "ring"}


def test_dataset_object_size_sets_the_world_scale(tmp_path):
    """data.object_size = the tiny profile's larger shapes: every box side in [min, max], recorded in world.json."""
    cfg = {"pool_size": 60, "object_size": [16, 26], "vocabulary": {"shapes": ["circle", "square", "triangle", "cross"],
                                                                    "colors": ["red", "green", "blue", "yellow"]}}
    build_dataset(cfg, tmp_path / "s")
    w = json.loads((tmp_path / "s" / "world.json").read_text())["world"]
    assert (w["size_min"], w["size_max"]) == (16.0, 26.0)
    sizes = [o["side"] for objs in load_manifest(tmp_path / "s").objects for o in json.loads(objs)]
    assert len(sizes) > 60 and 16.0 <= min(sizes) and max(sizes) <= 26.0 and max(sizes) - min(sizes) > 6


def test_data_stage(tmp_path, monkeypatch):
    from flows.stages.data import data, main
    from sana_core.data import open_source
    shapes = tmp_path / "data" / "shapes"
    m = data({"data": {"pool_size": 20}}, tmp_path)       # the world written as a dataset, read back by the seam
    assert m["n_train"] == 20 and len(list(open_source("shapes", shapes))) == 20
    assert sum(v for k, v in m.items() if k.startswith("defect_")) == 20
    (tmp_path / "params.yaml").write_text("data:\n  pool_size: 12\n  noise: {wrong_caption: 0.5}\n")
    monkeypatch.chdir(tmp_path)
    assert main() == 0
    rows = [json.loads(line) for line in (shapes / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and sum(r["defect"] == "wrong_caption" for r in rows) == 6


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_geneval_render(tmp_path, capsys):
    from flows.cli import main
    metas = [m for m in eval_comp() if m["tag"] in ("counting", "position")][:4]
    p = tmp_path / "p.jsonl"
    write_metadata_jsonl(p, metas)
    out = tmp_path / "renders"
    assert main(["geneval-render", "--prompts", str(p), "--out", str(out), "--n", "2", "--seed", "3"]) == 0
    got = list(iter_layout(out))
    assert [g[1] for g in got] == metas
    for i, meta, samples in got:
        assert len(samples) == 2
        for k, (_, im) in enumerate(samples):
            want = render(scene_for_metadata(meta, np.random.default_rng([3, i, k]), W64))
            assert np.array_equal(im, want)
    # existing output is protected; a prompt outside the world names file, line and class
    assert main(["geneval-render", "--prompts", str(p), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(metas[0]) + "\n" + '{"tag": "single_object", "include": [{"class": "dog", "count": 1}],'
                   ' "prompt": "a photo of a dog"}\n')
    assert main(["geneval-render", "--prompts", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "'dog'" in err and not (tmp_path / "x").exists()
    assert main(["geneval-render", "--prompts", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "y")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    star = tmp_path / "star.jsonl"
    write_metadata_jsonl(star, [m for m in shapes_suite() if m["prompt"] == "a photo of a star"])
    assert main(["geneval-render", "--prompts", str(star), "--out", str(tmp_path / "z"), "--size", "32"]) == 2
    assert "'star'" in capsys.readouterr().err


def test_cli_world_file_renders_and_scores_the_tiny_world(tmp_path, capsys):
    """--world data/shapes/world.json: render and score in the data stage's world (the tiny profile's 4 x 4 world at
    16-26 px); a shape outside it is refused naming the class; a broken world file is named."""
    from flows.cli import main
    from sana_core.geneval.world import load_world
    cfg = {"pool_size": 8, "object_size": [16, 26], "eval_n": 3,
           "vocabulary": {"shapes": ["circle", "square", "triangle", "cross"], "colors": ["red", "green", "blue", "yellow"]}}
    build_dataset(cfg, tmp_path / "s")
    wfile = tmp_path / "s" / "world.json"
    w = load_world(wfile)
    assert (w.size_min, w.size_max, w.shapes) == (16.0, 26.0, ("circle", "square", "triangle", "cross"))
    out = tmp_path / "gt"
    assert main(["geneval-render", "--prompts", str(tmp_path / "s" / "eval_iid.jsonl"), "--out", str(out), "--n", "1",
                 "--world", str(wfile)]) == 0
    capsys.readouterr()
    assert main(["geneval-score", str(out), "--world", str(wfile)]) == 0
    assert json.loads((out / "summary.json").read_text())["overall"] == 1.0
    star = tmp_path / "star.jsonl"
    write_metadata_jsonl(star, [m for m in shapes_suite() if m["prompt"] == "a photo of a star"])
    assert main(["geneval-render", "--prompts", str(star), "--out", str(tmp_path / "z"), "--world", str(wfile)]) == 2
    assert "'star'" in capsys.readouterr().err
    bad = tmp_path / "w.json"
    bad.write_text('{"world": {"image_size": 64, "colour": 1}}')
    assert main(["geneval-score", str(out), "--world", str(bad)]) == 2
    assert "w.json" in capsys.readouterr().err
