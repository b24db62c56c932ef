"""Stage `curate` on the data seam: the oracle gives today's scores.csv / selection on the shapes world read back
through the seam; the clip scorer's scores are 100·cos of normalised CLIP embeddings (by hand), its selection
(min_score / top_fraction) indexes the encoded rows; bad records are skipped and counted; a scorer that does not fit
the source, or clip without a model, fails before compute and writes nothing."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from flows import params as P
from flows.stages import _common as C
from flows.stages.curate import curate
from helpers import write_tiny_clip
from sana_core.data import open_source
from sana_core.data.curate import score_pool
from sana_core.data.encode import encode_dataset
from sana_core.data.images import decode_image
from sana_core.data.imagefolder import write_imagefolder
from sana_core.data.shapes import write_shapes
from sana_core.data.stream import ShardStream

pytestmark = pytest.mark.usefixtures("one_thread")


def _world_cfg(params) -> dict:
    """The GenEval-Shapes world's keys of the data section (what build_dataset / write_shapes take)."""
    from sana_core.geneval.dataset import DEFAULT_DATA_CFG
    return {k: v for k, v in params["data"].items() if k in DEFAULT_DATA_CFG}


def _encode(source, out, params, **kw):
    from sana_core.latents import build_codec
    from sana_core.text import build_text_encoder
    return encode_dataset(source, build_codec("smoke"), build_text_encoder(params["text"]), out,
                          image_size=params["data"]["image_size"], shard_size=16, batch_size=16, **kw)


@pytest.fixture(scope="module")
def shapes_repo(tmp_path_factory):
    """The smoke profile's pool as stage data + encode will leave it: data/shapes (the world written as an image
    folder) and data/cache (its encoded rows, in manifest order)."""
    root = tmp_path_factory.mktemp("repo")
    params = P.load_profile("smoke")
    write_shapes(_world_cfg(params), root / C.SHAPES)
    _encode(open_source("shapes", root / C.SHAPES), root / C.CACHE, params)
    return root, params


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def _stem(record) -> str:
    return record.key.rsplit("/", 1)[-1]        # an image folder's keys are the image paths without extension


def _with(params, **curate_keys):
    p = copy.deepcopy(params)
    p["curate"].update(curate_keys)
    return p


# ------------------------------------------------------------------------------------------------ oracle
def test_oracle_through_the_seam_is_todays_curate(shapes_repo, tmp_path):
    """Today's stage (build_dataset's images.npy + manifest.csv → score_pool → score ≥ min_score, best first, at most
    max_samples) and the seam's stage write the same scores.csv; selected rows = today's indices."""
    from sana_core.geneval.dataset import build_dataset, load_images, load_manifest
    root, params = shapes_repo
    m = curate(params, root)

    build_dataset(_world_cfg(params), tmp_path / "legacy")
    man = load_manifest(tmp_path / "legacy")
    ref = score_pool(load_images(tmp_path / "legacy"), man, C.world(params))
    cfg = params["curate"]
    passed = ref[ref["score"] >= cfg["min_score"]].sort_values(["score", "index"], ascending=[False, True])
    keep = sorted(passed.head(cfg["max_samples"])["index"].tolist())
    ref["kept"] = ref["index"].isin(keep)
    assert (root / C.CURATED / "scores.csv").read_text() == ref.to_csv(index=False, lineterminator="\n")

    sel = json.loads((root / C.CURATED / "selected.json").read_text())
    assert sel["rows"] == keep and len(keep) == cfg["max_samples"] == 32 < len(man) == 64
    keys = [r.key for r in open_source("shapes", root / C.SHAPES)]
    assert sel["keys"] == [keys[i] for i in keep] and sel["scorer"] == "oracle"
    assert ShardStream(root / C.CACHE, rows=sel["rows"]).captions() == man["caption"][keep].tolist()
    assert (m["n_pool"], m["n_scored"], m["n_kept"], m["n_records"], m["n_bad"], m["n_not_encoded"]) == \
        (64, 64, 32, 64, 0, 0)
    assert m["n_correct"] == int(ref["correct"].sum())
    assert m["defect_frac_kept"] < m["defect_frac_pool"] < m["defect_frac_dropped"]   # curation removes defects


def test_oracle_refuses_a_source_without_the_worlds_metadata(shapes_repo, tmp_path, monkeypatch):
    """Real data has no tag/defect: oracle → error naming curate.scorer before any image is decoded; nothing written."""
    import sana_core.data.curate as lib
    root, params = shapes_repo
    src_root = tmp_path / "repo"
    recs = list(open_source("shapes", root / C.SHAPES))[:8]
    write_imagefolder(((_stem(r), decode_image(r.image, 64), r.caption, {}) for r in recs), tmp_path / "plain")
    _encode(open_source("imagefolder", tmp_path / "plain"), src_root / C.CACHE, params)
    p = copy.deepcopy(params)
    p["data"].update(source="imagefolder", path=str(tmp_path / "plain"))
    monkeypatch.setattr(lib, "decode_image", lambda *a: pytest.fail("decoded an image before the scorer check"))
    with pytest.raises(ValueError, match=r"curate.scorer: 'oracle' .* data.source 'imagefolder' .*curate.scorer: clip"):
        curate(p, src_root)
    assert not (src_root / C.CURATED).exists()


# ------------------------------------------------------------------------------------------------ clip
def _hand_clip_scores(clip_path, images, captions) -> np.ndarray:
    """100 · <v/|v|, t/|t|> from CLIP's projected pooled embeddings, in float64 numpy."""
    from transformers import CLIPModel, CLIPProcessor
    model, proc = CLIPModel.from_pretrained(clip_path).eval(), CLIPProcessor.from_pretrained(clip_path)
    with torch.no_grad():
        enc = proc(text=captions, images=[Image.fromarray(a) for a in images], return_tensors="pt", padding=True,
                   truncation=True)
        v = model.visual_projection(model.vision_model(pixel_values=enc["pixel_values"]).pooler_output).double()
        t = model.text_projection(model.text_model(input_ids=enc["input_ids"],
                                                   attention_mask=enc["attention_mask"]).pooler_output).double()
    v, t = v.numpy(), t.numpy()
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return 100.0 * (v * t).sum(1)


def test_clip_scores_by_hand_and_selection_by_rows(shapes_repo, tiny_clip):
    root, params = shapes_repo
    recs = list(open_source("shapes", root / C.SHAPES))
    hand = _hand_clip_scores(tiny_clip, [decode_image(r.image, 64) for r in recs], [r.caption for r in recs])

    m = curate(_with(params, scorer="clip", clip_path=str(tiny_clip), min_score=None, top_fraction=0.25,
                     max_samples=0, batch_size=7), root)
    df = pd.read_csv(root / C.CURATED / "scores.csv")
    assert list(df.columns) == ["row", "key", "caption", "clip_score", "kept"]
    assert df["row"].tolist() == list(range(64)) and df["key"].tolist() == [r.key for r in recs]
    assert df["clip_score"].to_numpy() == pytest.approx(hand, abs=1e-4)
    assert np.ptp(hand) > 1.0                                                    # a random CLIP still separates pairs
    top = sorted(np.argsort(-hand, kind="stable")[:16].tolist())               # top 25 % of 64
    sel = json.loads((root / C.CURATED / "selected.json").read_text())
    assert sel["rows"] == top == df.index[df["kept"]].tolist() and m["n_kept"] == 16
    assert sel["keys"] == [recs[i].key for i in top] and sel["scorer"] == "clip"

    thr = float(np.median(hand))                                                # threshold alone, then both
    curate(_with(params, scorer="clip", clip_path=str(tiny_clip), min_score=thr, top_fraction=None, max_samples=0),
           root)
    sel = json.loads((root / C.CURATED / "selected.json").read_text())
    assert sel["rows"] == [i for i in range(64) if hand[i] >= thr] and sel["min_score"] == thr
    m = curate(_with(params, scorer="clip", clip_path=str(tiny_clip), min_score=thr, top_fraction=None,
                     max_samples=5), root)
    assert json.loads((root / C.CURATED / "selected.json").read_text())["rows"] == \
        sorted(np.argsort(-hand, kind="stable")[:5].tolist())
    assert m["mean_clip_score_kept"] > m["mean_clip_score_dropped"]


def test_clip_needs_its_model_folder(shapes_repo, tmp_path):
    root, params = shapes_repo
    with pytest.raises(ValueError, match="curate.clip_path"):
        curate(_with(params, scorer="clip", clip_path=None), tmp_path)
    with pytest.raises(FileNotFoundError, match="curate.clip_path"):
        curate(_with(params, scorer="clip", clip_path=str(tmp_path / "nope")), root)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_records_are_skipped_and_counted(shapes_repo, tiny_clip, tmp_path):
    """An unreadable image and a missing caption in an image folder: not encoded, not scored, counted; a caption over
    the text encoder's length (bad for encode, readable for CLIP): not in the pool, counted apart; more bad records
    than data.max_bad_fraction → error, nothing written."""
    root, params = shapes_repo
    recs = list(open_source("shapes", root / C.SHAPES))[:20]
    folder = tmp_path / "folder"
    caps = {7: "", 11: " ".join(["a red circle"] * 12)}
    write_imagefolder(((_stem(r), decode_image(r.image, 64), caps.get(i, r.caption), {})
                       for i, r in enumerate(recs)), folder)
    (folder / "images" / f"{_stem(recs[3])}.png").write_bytes(b"not a png")
    repo = tmp_path / "repo"
    stats = _encode(open_source("imagefolder", folder), repo / C.CACHE, params, max_bad_fraction=0.2)
    assert stats["n"] == 17 and stats["n_bad"] == 3

    p = _with(params, scorer="clip", clip_path=str(tiny_clip), min_score=None, top_fraction=0.5)
    p["data"].update(source="imagefolder", path=str(folder), max_bad_fraction=0.2)
    m = curate(p, repo)
    df = pd.read_csv(repo / C.CURATED / "scores.csv", dtype={"key": str})
    good = [f"images/{_stem(r)}" for i, r in enumerate(recs) if i not in (3, 7, 11)]
    held = params["importance"]["n_prompts"]           # a brought dataset's last rows: calibration, never selected
    assert df["key"].tolist() == good[:17 - held] and df["row"].tolist() == list(range(17 - held))
    assert (m["n_records"], m["n_bad"], m["n_not_encoded"], m["n_heldout"], m["n_scored"]) == (20, 2, 1, held, 17 - held)
    assert m["n_kept"] == -(-(17 - held) // 2)           # top_fraction 0.5, rounded up
    assert (m["n_bad_unreadable_image"], m["n_bad_missing_caption"]) == (1, 1)
    sel = json.loads((repo / C.CURATED / "selected.json").read_text())
    assert ShardStream(repo / C.CACHE).keys(sel["rows"]) == sel["keys"]

    p["data"]["max_bad_fraction"] = 0.05                                        # 2 of 20 > 5 %
    (repo / C.CURATED / "selected.json").unlink()
    (repo / C.CURATED / "scores.csv").unlink()
    (repo / C.CURATED).rmdir()
    with pytest.raises(ValueError, match="data.max_bad_fraction"):
        curate(p, repo)
    assert not (repo / C.CURATED).exists()
