"""Build the GenEval-Shapes training pool and its prompt files (geneval.md §6.1, §6.7) — `build_dataset(cfg, out_dir)`.

Output (`data/shapes/`-style, every file byte-identical for the same cfg):
    images.npy          uint8 [N, H, W, 3] (np.save)
    manifest.csv        one row per image: index, caption, tag (caption family), objects (JSON list of
                        {shape, color, cx, cy, side[, rgb]}), n_objects, split ("train"), defect, clean_caption,
                        clean_tag (the correct caption/family of the scene, for measuring curation)
    eval_iid.jsonl      GenEval metadata, seen combinations        (splits.eval_iid)
    eval_comp.jsonl     GenEval metadata, held-out combinations    (splits.eval_comp)
    calibration.jsonl   100 training-split prompts over the six tags (block importance)
    world.json          world config, held-out rules, resolved cfg, counts

"Noisy web data" mode — the raw pool that SANA-1.5's SFT stage curates. Disjoint fractions of the pool carry one
defect each (exact counts = round(fraction · pool_size), recorded in the manifest):
    wrong_caption        the clean caption of another scene that names a different multiset of shapes
    incomplete_caption   the caption drops one object of the scene (only scenes with ≥ 2 objects)
    blur                 Gaussian blur, σ ~ U[degrade.blur_sigma]
    noise                additive Gaussian noise, std degrade.noise_std (8-bit units)
    color_jitter         every object's colour shifted per channel by an integer in ±degrade.color_jitter
`color_jitter_train` (doc: optional ±10) jitters every training object's colour and is not a defect.
Strict compositional hold-out (`splits.HeldOut`) applies to every scene, defective or not.
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_dir
from .layout import write_metadata_jsonl
from .prompts import TRAIN_FAMILIES, TrainingSampler, caption_from_groups
from .render import degrade, jitter_colors, render
from .splits import HeldOut, calibration_prompts, describe_rules, eval_comp, eval_iid
from .world import WorldConfig, world_config

DEFECTS: tuple[str, ...] = ("wrong_caption", "incomplete_caption", "blur", "noise", "color_jitter")

DEFAULT_DATA_CFG: dict = {
    "image_size": 64,              # 64 (doc default) or 32 (s ∈ [7, 11], no star/heart)
    "pool_size": 2048,             # training pairs
    "seed": 0,                     # training pool
    "eval_seed": 43,               # eval prompt sampling (GenEval's seed)
    "eval_n": 100,                 # max prompts per sampled tag (two_object, position, color_attr)
    "calibration_size": 100,
    "holdout": True,               # compositional held-out split (§6.7)
    "color_jitter_train": 0,       # ±k per channel on every training object (doc: optional ±10)
    "families": {f: 1.0 for f in TRAIN_FAMILIES},
    "noise": {"wrong_caption": 0.10, "incomplete_caption": 0.10, "blur": 0.05, "noise": 0.05, "color_jitter": 0.05},
    "degrade": {"blur_sigma": [1.0, 2.0], "noise_std": 12.0, "color_jitter": 30},
    "vocabulary": {"shapes": None, "colors": None},   # None = the world's full vocabulary
    "object_size": None,           # [min, max] box side in px; None = the world's default (64 px: [12, 20])
}


def _merge(default: dict, given: dict, prefix: str) -> dict:
    if not isinstance(given, dict):
        raise ValueError(f"{prefix or 'data'}: expected a mapping, got {type(given).__name__}")
    out = copy.deepcopy(default)
    for k, v in given.items():
        key = f"{prefix}.{k}" if prefix else f"data.{k}"
        if k not in default:
            raise ValueError(f"{key}: unknown key; allowed {sorted(default)}")
        if isinstance(default[k], dict):
            out[k] = _merge(default[k], v or {}, key)
        else:
            out[k] = v
    return out


def _num(cfg_val, key, lo=None, hi=None, integer=False):
    if isinstance(cfg_val, bool) or not isinstance(cfg_val, (int, float)) or (integer and not float(cfg_val).is_integer()):
        raise ValueError(f"{key}: expected {'an integer' if integer else 'a number'}, got {cfg_val!r}")
    if (lo is not None and cfg_val < lo) or (hi is not None and cfg_val > hi):
        raise ValueError(f"{key}: {cfg_val} outside [{lo}, {hi}]")
    return int(cfg_val) if integer else float(cfg_val)


def resolve_data_cfg(cfg: dict | None) -> tuple[dict, WorldConfig]:
    """Merge `cfg` over DEFAULT_DATA_CFG and validate it (errors name the key); returns (cfg, world)."""
    c = _merge(DEFAULT_DATA_CFG, cfg or {}, "")
    c["image_size"] = _num(c["image_size"], "data.image_size", integer=True)
    c["pool_size"] = _num(c["pool_size"], "data.pool_size", 1, integer=True)
    for k in ("seed", "eval_seed"):
        c[k] = _num(c[k], f"data.{k}", 0, integer=True)
    c["eval_n"] = _num(c["eval_n"], "data.eval_n", 1, integer=True)
    c["calibration_size"] = _num(c["calibration_size"], "data.calibration_size", 0, integer=True)
    c["color_jitter_train"] = _num(c["color_jitter_train"], "data.color_jitter_train", 0, 255, integer=True)
    if not isinstance(c["holdout"], bool):
        raise ValueError(f"data.holdout: expected true/false, got {c['holdout']!r}")
    for k, v in c["families"].items():
        c["families"][k] = _num(v, f"data.families.{k}", 0)
    for k in DEFECTS:
        c["noise"][k] = _num(c["noise"][k], f"data.noise.{k}", 0, 1)
    if sum(c["noise"].values()) > 1 + 1e-9:
        raise ValueError(f"data.noise: fractions sum to {sum(c['noise'].values()):.3f} > 1")
    d = c["degrade"]
    bs = d["blur_sigma"]
    if not (isinstance(bs, (list, tuple)) and len(bs) == 2):
        raise ValueError(f"data.degrade.blur_sigma: expected [min, max], got {bs!r}")
    d["blur_sigma"] = [_num(bs[0], "data.degrade.blur_sigma", 0), _num(bs[1], "data.degrade.blur_sigma", 0)]
    if d["blur_sigma"][0] > d["blur_sigma"][1]:
        raise ValueError(f"data.degrade.blur_sigma: min > max in {bs!r}")
    d["noise_std"] = _num(d["noise_std"], "data.degrade.noise_std", 0)
    d["color_jitter"] = _num(d["color_jitter"], "data.degrade.color_jitter", 0, 255, integer=True)
    voc = {}
    for k in ("shapes", "colors"):
        v = c["vocabulary"][k]
        if v is not None:
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) for x in v):
                raise ValueError(f"data.vocabulary.{k}: expected a non-empty list of names or null, got {v!r}")
            if len(set(v)) != len(v):
                raise ValueError(f"data.vocabulary.{k}: duplicate names in {list(v)}")
            voc[k] = tuple(v)
            c["vocabulary"][k] = list(v)
    if c["image_size"] not in (32, 64):
        raise ValueError(f"data.image_size: {c['image_size']} not supported (64 or 32)")
    osz = c["object_size"]
    if osz is not None:
        if not (isinstance(osz, (list, tuple)) and len(osz) == 2):
            raise ValueError(f"data.object_size: expected [min, max] in px or null, got {osz!r}")
        lo = _num(osz[0], "data.object_size", 1, c["image_size"] - 1)
        hi = _num(osz[1], "data.object_size", lo, c["image_size"] - 1)
        voc.update(size_min=lo, size_max=hi)
        c["object_size"] = [lo, hi]
    try:
        world = world_config(c["image_size"], **voc)
    except ValueError as e:
        raise ValueError(f"data.vocabulary: {e}") from None
    return c, world


def family_of(groups) -> str:
    """Caption family of a list of groups (shape, count, colour|None), used for edited (incomplete) captions."""
    if len(groups) == 1:
        s, n, c = groups[0]
        if n == 1:
            return "colors" if c else "single_object"
        return "multi_object" if c else "counting"
    if len(groups) == 2 and all(n == 1 for _, n, _ in groups):
        cols = [c is not None for _, _, c in groups]
        if all(cols):
            return "color_attr"
        if not any(cols):
            return "two_object"
    return "multi_object"


def drop_one(ex, rng: np.random.Generator) -> tuple[str, str]:
    """(caption, family) describing the scene minus one of its objects (position: one of the two)."""
    groups = [list(g) for g in ex.groups]
    weights = np.array([g[1] for g in groups], float)
    k = int(rng.choice(len(groups), p=weights / weights.sum()))
    groups[k][1] -= 1
    groups = [tuple(g) for g in groups if g[1] > 0]
    return caption_from_groups(groups), family_of(groups)


def _described_shapes(ex) -> Counter:
    c = Counter()
    for s, n, _ in ex.groups:
        c[s] += n
    return c


def _wrong_partner(examples, i: int, rng: np.random.Generator, tries: int = 1000) -> int:
    """Index of another example whose caption is wrong for scene i: it describes a different multiset of shapes
    (so it is not merely a less specific but true caption, e.g. "a circle" for a red circle). Falls back to any
    different caption string if the pool has none (tiny vocabularies)."""
    mine = Counter(o.shape for o in examples[i].objs)
    fallback = None
    for _ in range(tries):
        j = int(rng.integers(len(examples)))
        if examples[j].caption == examples[i].caption:
            continue
        if _described_shapes(examples[j]) != mine:
            return j
        fallback = j if fallback is None else fallback
    if fallback is None:
        raise ValueError("data.noise.wrong_caption: the pool has no other caption to swap in")
    return fallback


def build_dataset(cfg: dict | None, out_dir) -> dict:
    """Build the pool + prompt files into `out_dir` (atomically: a temp folder beside it, then a rename).
    Returns counts {n_train, n_eval_iid, n_eval_comp, n_calibration, defects: {defect: n}, families: {tag: n}}."""
    cfg, world = resolve_data_cfg(cfg)                  # every config error before any compute
    out_dir = Path(out_dir)
    rules = HeldOut(enabled=cfg["holdout"])
    sampler = TrainingSampler(world, rules, cfg["families"])
    N, seed = cfg["pool_size"], cfg["seed"]

    examples = []
    for i in range(N):
        rng = np.random.default_rng([seed, 0, i])
        ex = sampler.sample(rng)
        if cfg["color_jitter_train"]:
            ex.objs = jitter_colors(ex.objs, rng, cfg["color_jitter_train"])
        examples.append(ex)

    # defect assignment: exact counts, disjoint; incomplete captions only where a scene has ≥ 2 objects
    drng = np.random.default_rng([seed, 1])
    defect = ["none"] * N
    free = list(drng.permutation(N))
    want = {d: int(round(cfg["noise"][d] * N)) for d in DEFECTS}
    multi = [i for i in free if len(examples[i].objs) >= 2][:want["incomplete_caption"]]
    for i in multi:
        defect[i] = "incomplete_caption"
    taken = set(multi)
    free = [i for i in free if i not in taken]
    for d in ("wrong_caption", "blur", "noise", "color_jitter"):
        for i in free[:want[d]]:
            defect[i] = d
        free = free[want[d]:]

    images = np.empty((N, world.image_size, world.image_size, 3), np.uint8)
    rows = []
    clean = [ex.caption for ex in examples]
    for i, ex in enumerate(examples):
        rng = np.random.default_rng([seed, 2, i])
        objs, caption, tag = ex.objs, ex.caption, ex.tag
        d = defect[i]
        if d == "color_jitter":
            objs = jitter_colors(objs, rng, cfg["degrade"]["color_jitter"])
        img = render(objs, world.image_size, supersample=world.supersample)
        if d == "blur":
            lo, hi = cfg["degrade"]["blur_sigma"]
            img = degrade(img, rng, blur=float(rng.uniform(lo, hi)))
        elif d == "noise":
            img = degrade(img, rng, noise=cfg["degrade"]["noise_std"])
        elif d == "wrong_caption":
            j = _wrong_partner(examples, i, rng)
            caption, tag = clean[j], examples[j].tag
        elif d == "incomplete_caption":
            caption, tag = drop_one(ex, rng)
        images[i] = img
        rows.append({"index": i, "caption": caption, "tag": tag,
                     "objects": json.dumps([o.to_dict() for o in objs]), "n_objects": len(objs), "split": "train",
                     "defect": d, "clean_caption": ex.caption, "clean_tag": ex.tag})
    manifest = pd.DataFrame(rows)

    iid = eval_iid(world, cfg["eval_seed"], cfg["eval_n"])
    comp = eval_comp(world, cfg["eval_seed"], cfg["eval_n"])
    calib = calibration_prompts(world, seed, cfg["calibration_size"])
    stats = {
        "n_train": N, "n_eval_iid": len(iid), "n_eval_comp": len(comp), "n_calibration": len(calib),
        "defects": {d: int(c) for d, c in sorted(Counter(defect).items())},
        "families": {f: int(c) for f, c in sorted(Counter(ex.tag for ex in examples).items())},
    }
    world_info = {"world": world.to_dict(), "holdout": cfg["holdout"],
                  "held_out": describe_rules(world) if cfg["holdout"] else None,
                  "families": sampler.families, "cfg": cfg, "stats": stats}

    def write(tmp: Path):
        np.save(tmp / "images.npy", images)
        manifest.to_csv(tmp / "manifest.csv", index=False, lineterminator="\n")
        write_metadata_jsonl(tmp / "eval_iid.jsonl", iid)
        write_metadata_jsonl(tmp / "eval_comp.jsonl", comp)
        write_metadata_jsonl(tmp / "calibration.jsonl", calib)
        (tmp / "world.json").write_text(json.dumps(world_info, indent=2) + "\n")

    atomic_dir(out_dir, write)
    return stats


def load_manifest(out_dir) -> pd.DataFrame:
    p = Path(out_dir) / "manifest.csv"
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    return pd.read_csv(p, keep_default_na=False)


def load_images(out_dir) -> np.ndarray:
    p = Path(out_dir) / "images.npy"
    if not p.is_file():
        raise FileNotFoundError(f"image array not found: {p}")
    return np.load(p, allow_pickle=False)
