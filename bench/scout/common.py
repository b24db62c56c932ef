"""Scouting helpers (throwaway): reduced world, GT renders of eval prompts, in-memory exact scoring."""
import os, sys, time, json
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, "/work/main")
import numpy as np, pandas as pd, torch
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
from sana_core.geneval import dataset as ds
from sana_core.geneval.world import world_config
from sana_core.geneval.prompts import scene_for_metadata
from sana_core.geneval.render import render
from sana_core.geneval.detect import score_image
from sana_core.geneval.evaluate import summary

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = ("red", "green", "blue", "yellow")
SMIN, SMAX = 16.0, 26.0
WORK = "/work/main/bench/scout/work"

def world():
    return world_config(64, shapes=SHAPES, colors=COLORS, size_min=SMIN, size_max=SMAX)

def patch_dataset_world():
    """build_dataset only takes vocabulary overrides; patch sizes in (library lacks data.size_min/size_max keys)."""
    orig = ds.world_config
    ds.world_config = lambda size, **kw: orig(size, size_min=SMIN, size_max=SMAX, **kw)

def data_cfg(pool, clean=True):
    c = {"image_size": 64, "pool_size": pool, "vocabulary": {"shapes": list(SHAPES), "colors": list(COLORS)}}
    if clean:
        c["noise"] = {k: 0.0 for k in ("wrong_caption", "incomplete_caption", "blur", "noise", "color_jitter")}
    return c

def read_jsonl(p):
    return [json.loads(l) for l in open(p) if l.strip()]

def gt_renders(metas, w, seed=7):
    out = []
    for i, m in enumerate(metas):
        objs = scene_for_metadata(m, np.random.default_rng([seed, i]), w)
        out.append(render(objs, w.image_size, supersample=w.supersample))
    return np.stack(out)

def score(images, metas, w):
    rows = []
    for im, m in zip(images, metas):
        c, r, _ = score_image(im, m, w)
        rows.append({"tag": m["tag"], "correct": bool(c), "reason": r})
    df = pd.DataFrame(rows)
    return df, summary(df)

def cpu_s():
    t = os.times(); return t.user + t.system

def grid(images, ncol=16):
    n = len(images); nrow = (n + ncol - 1) // ncol
    H, W = images.shape[1:3]
    g = np.full((nrow * (H + 2), ncol * (W + 2), 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, ncol); g[r*(H+2):r*(H+2)+H, c*(W+2):c*(W+2)+W] = im
    return g

def is_empty(im):
    """No pixel far from the grey background (max channel deviation < 40 over fewer than 20 px)."""
    d = np.abs(im.astype(int) - 128).max(-1)
    return (d > 40).sum() < 20
