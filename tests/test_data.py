"""The data seam (sana_core/data): one small rendered pool written as an image folder, as webdataset shards and as a
`datasets` dataset reads back, encodes and streams identically; the stream is TensorData's batches; encoding resumes
per shard; bad input is skipped and counted up to max_bad_fraction; the CLIP-score scorer's maths."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sana_core.data import open_source
from sana_core.data.encode import encode_dataset
from sana_core.data.images import decode_image
from sana_core.data.imagefolder import write_imagefolder
from sana_core.data.shapes import write_shapes
from sana_core.data.stream import ShardStream
from sana_core.data.webdataset import write_webdataset
from sana_core.train import TensorData

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = {"pool_size": 24, "eval_n": 2, "calibration_size": 4}
SIZE = 64


@pytest.fixture(scope="module")
def enc():
    from sana_core.latents import build_codec
    from sana_core.text import build_text_encoder
    return build_codec("smoke"), build_text_encoder({"max_length": 16})


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The smoke pool rendered by the shapes source (image folder) + the same pairs as items (key, image, caption)."""
    root = tmp_path_factory.mktemp("pool")
    write_shapes(CFG, root / "shapes")
    items = [(f"{i:08d}", decode_image(r.image, SIZE), r.caption, {})
             for i, r in enumerate(open_source("shapes", root / "shapes"))]
    return root, items


def _encode(src, out, enc, **kw):
    codec, text = enc
    return encode_dataset(src, codec, text, out, **{"image_size": SIZE, "shard_size": 10, "batch_size": 8, **kw})


def _all(stream):
    n = len(stream)
    return stream.batch(torch.arange(n)), stream.captions()


def _same(a, b):
    (la, ea, ma), ca = a
    (lb, eb, mb), cb = b
    return torch.equal(la, lb) and torch.equal(ea, eb) and torch.equal(ma, mb) and ca == cb


# ------------------------------------------------------------------------------------------------ sources
def test_shapes_source_is_the_world_pool(pool, tmp_path):
    """The shapes world written as an image folder reads back pixel-exact, with the manifest's columns."""
    from sana_core.geneval.dataset import build_dataset, load_images, load_manifest
    root, items = pool
    build_dataset(CFG, tmp_path / "legacy")
    imgs, man = load_images(tmp_path / "legacy"), load_manifest(tmp_path / "legacy")
    assert np.array_equal(np.stack([it[1] for it in items]), imgs)
    assert [it[2] for it in items] == man["caption"].tolist()
    recs = list(open_source("shapes", root / "shapes"))
    assert [r.meta["defect"] for r in recs] == man["defect"].tolist()
    for f in ("eval_iid.jsonl", "eval_comp.jsonl", "calibration.jsonl", "world.json"):
        assert (root / "shapes" / f).read_bytes() == (tmp_path / "legacy" / f).read_bytes()
    write_shapes(CFG, tmp_path / "wds", format="webdataset", shard_size=10)
    assert sorted(p.name for p in (tmp_path / "wds" / "shards").iterdir()) == ["00000.tar", "00001.tar", "00002.tar"]
    assert [decode_image(r.image, SIZE).tobytes() for r in open_source("shapes", tmp_path / "wds")] == \
        [it[1].tobytes() for it in items]


def test_three_formats_encode_and_stream_identically(pool, enc, tmp_path):
    """image folder (same-stem .txt), webdataset shards and a datasets dataset (saved and as parquet) of the same
    pairs → identical latents, text features, masks and captions; identical fingerprints."""
    import datasets
    _, items = pool
    folder = tmp_path / "folder"
    for k, img, cap, _ in items:  # SANA's layout: same-stem caption files, no metadata
        (folder / "imgs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / "imgs" / f"{k}.png")
        (folder / "imgs" / f"{k}.txt").write_text(cap)
    write_webdataset(items, tmp_path / "wds", shard_size=7)
    ds = datasets.Dataset.from_dict({"picture": [Image.fromarray(it[1]) for it in items],
                                     "caption": [it[2] for it in items]},
                                    features=datasets.Features({"picture": datasets.Image(),
                                                                "caption": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    sources = {"imagefolder": open_source("imagefolder", folder),
               "webdataset": open_source("webdataset", str(tmp_path / "wds" / "{00000..00003}.tar")),
               "hf": open_source("hf", tmp_path / "hf", image_column="picture", text_column="caption"),
               "parquet": open_source("hf", tmp_path / "pq", image_column="picture", text_column="caption")}
    streams = {}
    for name, src in sources.items():
        st = _encode(src, tmp_path / f"enc_{name}", enc)
        assert (st["n"], st["n_bad"], st["n_shards"]) == (24, 0, 3), name
        streams[name] = ShardStream(tmp_path / f"enc_{name}")
    ref = _all(streams["imagefolder"])
    assert ref[1] == [it[2] for it in items]
    assert tuple(ref[0][0].shape) == (24, 16, 16, 16) and tuple(ref[0][1].shape) == (24, 16, 384)
    for name, s in streams.items():
        assert _same(_all(s), ref), name
        assert s.fingerprint() == streams["imagefolder"].fingerprint(), name
    assert streams["webdataset"].keys()[:2] == ["00000000", "00000001"]


def test_seam_equals_todays_cache_and_tensordata(pool, enc, tmp_path):
    """For the same pool the stream gives exactly what sana_core.cache + TensorData give today (so moving the tiny
    pipeline onto the seam keeps its results): same indices and batches every step, across epoch boundaries, for the
    whole pool and for a subset; same null embedding."""
    from sana_core.cache import build_cache, load_cache
    root, items = pool
    codec, text = enc
    build_cache(np.stack([it[1] for it in items]), [it[2] for it in items], codec, text, tmp_path / "cache",
                batch_size=8)
    c = load_cache(tmp_path / "cache")
    _encode(open_source("shapes", root / "shapes"), tmp_path / "enc", enc)
    full = (TensorData(c.latents, c.emb, c.mask, c.null_emb, c.caption_index), ShardStream(tmp_path / "enc"))
    sub = [3, 17, 5, 11, 20, 0, 9]
    part = (TensorData(c.latents[sub], c.emb, c.mask, c.null_emb, c.caption_index[sub]),
            ShardStream(tmp_path / "enc", rows=sub))
    for td, ss in (full, part):
        assert len(td) == len(ss) and torch.equal(td.null_emb, ss.null_emb)
        assert ss.latent_shape == tuple(c.latents.shape[1:]) and ss.text_shape == tuple(c.emb.shape[1:])
        for step in range(9):  # B=5 over N=24 / 7 straddles epochs
            i_td, i_ss = td.indices(3, step, 5), ss.indices(3, step, 5)
            assert torch.equal(i_td, i_ss)
            assert all(torch.equal(a, b) for a, b in zip(td.batch(i_td), ss.batch(i_ss)))
    assert full[1].fingerprint() != part[1].fingerprint()


def test_stream_resumes_at_a_data_position_mid_shard(pool, enc, tmp_path):
    """Batches from step k of a fresh stream equal batches k of a long-running one (k·B falls inside a shard)."""
    root, _ = pool
    _encode(open_source("shapes", root / "shapes"), tmp_path / "enc", enc, shard_size=8)
    long = ShardStream(tmp_path / "enc")
    seen = [long.batch(long.indices(0, k, 3)) for k in range(12)]
    for k in (3, 7, 10):  # positions 9, 21, 30: mid-shard, and in the second epoch
        fresh = ShardStream(tmp_path / "enc")
        for j in range(k, 12):
            assert all(torch.equal(a, b) for a, b in zip(fresh.batch(fresh.indices(0, j, 3)), seen[j]))


def test_encode_resumes_after_a_kill_at_shard_granularity(pool, enc, tmp_path, monkeypatch):
    root, _ = pool
    src = open_source("shapes", root / "shapes")
    _encode(src, tmp_path / "ref", enc)

    class Killed(BaseException):
        pass

    class Dying:  # the same source; the process dies while reading its 15th record (in the second shard)
        kind, path = src.kind, src.path

        def __iter__(self):
            for i, r in enumerate(src):
                if i == 14:
                    raise Killed
                yield r

    with pytest.raises(Killed):
        _encode(Dying(), tmp_path / "enc", enc)
    assert not (tmp_path / "enc").exists()
    partial = tmp_path / ".partial-enc" / "shards"
    assert sorted(p.name for p in partial.iterdir()) == ["00000"]
    calls = []
    import sana_core.data.encode as E
    real = E._encode_shard
    monkeypatch.setattr(E, "_encode_shard", lambda chunk, sd, *a: calls.append(sd.name) or real(chunk, sd, *a))
    st = _encode(src, tmp_path / "enc", enc)
    assert calls == ["00001", "00002"] and st["n_shards_resumed"] == 1 and st["n"] == 24
    assert not (tmp_path / ".partial-enc").exists()
    assert _same(_all(ShardStream(tmp_path / "enc")), _all(ShardStream(tmp_path / "ref")))


def test_latent_dtypes_and_online_text(pool, enc, tmp_path):
    root, _ = pool
    src = open_source("shapes", root / "shapes")
    _encode(src, tmp_path / "f32", enc)
    ref = ShardStream(tmp_path / "f32")
    idx = ref.indices(1, 2, 6)
    lat, emb, mask = ref.batch(idx)
    for dt, tol in (("float16", 2 ** -10), ("bfloat16", 2 ** -7)):
        _encode(src, tmp_path / dt, enc, latent_dtype=dt)
        s = ShardStream(tmp_path / dt)
        got = s.batch(idx)[0]
        assert got.dtype == torch.float32
        assert torch.allclose(got, lat, rtol=tol, atol=1e-6) and not torch.equal(got, lat)
        assert (tmp_path / dt / "shards" / "00000" / "latents.npy").stat().st_size < \
            (tmp_path / "f32" / "shards" / "00000" / "latents.npy").stat().st_size * 0.6
    _encode(src, tmp_path / "online", enc, text="online")
    assert not (tmp_path / "online" / "shards" / "00000" / "emb.npy").exists()
    with pytest.raises(ValueError, match="online"):
        ShardStream(tmp_path / "online")
    on = ShardStream(tmp_path / "online", text_encoder=enc[1])
    lat2, emb2, mask2 = on.batch(idx)
    assert torch.equal(lat2, lat) and torch.equal(mask2, mask) and torch.allclose(emb2, emb, atol=1e-5)
    assert torch.equal(on.null_emb, ref.null_emb) and on.text_shape == ref.text_shape


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_records_are_skipped_counted_and_named(pool, enc, tmp_path, caplog):
    _, items = pool
    d = tmp_path / "folder"
    write_imagefolder(items, d)
    (d / "images" / "00000003.png").write_bytes(b"not a png at all")                      # corrupt image
    rows = [json.loads(x) for x in (d / "metadata.jsonl").read_text().splitlines()]
    rows[7]["text"] = ""                                                                  # missing caption
    rows[9]["text"] = "a photo of " + " and ".join(["a red circle"] * 12)                 # over max_length 16
    (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="sana_core.data"):
        st = _encode(open_source("imagefolder", d), tmp_path / "enc", enc, max_bad_fraction=0.2)
    assert (st["n"], st["n_records"], st["n_bad"]) == (21, 24, 3)
    assert st["bad_reasons"] == {"unreadable image": 1, "missing caption": 1,
                                 "caption longer than the text encoder's max length 16": 1}
    assert "00000003.png" in caplog.text and "00000007.png" in caplog.text
    s = ShardStream(tmp_path / "enc")
    assert len(s) == 21 and "images/00000003" not in s.keys()
    assert s.captions() == [it[2] for i, it in enumerate(items) if i not in (3, 7, 9)]
    # beyond max_bad_fraction (default 1 %): a clear error and no output, not even a partial folder
    with pytest.raises(ValueError, match=r"data.max_bad_fraction: 3 of 24 .*00000003.png"):
        _encode(open_source("imagefolder", d), tmp_path / "enc2", enc)
    assert not (tmp_path / "enc2").exists() and not (tmp_path / ".partial-enc2").exists()


def test_missing_caption_file_and_empty_shard(pool, enc, tmp_path):
    _, items = pool
    d = tmp_path / "folder"
    d.mkdir()
    for k, img, cap, _ in items[:10]:
        Image.fromarray(img).save(d / f"{k}.png")
        if k != "00000004":
            (d / f"{k}.txt").write_text(cap)
    with pytest.raises(ValueError, match=r"1 of 10 .*00000004.png: missing caption"):
        _encode(open_source("imagefolder", d), tmp_path / "enc", enc)
    write_webdataset(items[:5], tmp_path / "wds", shard_size=5)
    import tarfile
    with tarfile.open(tmp_path / "wds" / "00001.tar", "w"):
        pass
    st = _encode(open_source("webdataset", tmp_path / "wds"), tmp_path / "enc_w", enc, max_bad_fraction=0.5)
    assert (st["n"], st["n_bad"], st["bad_reasons"]) == (5, 1, {"empty shard": 1})


def test_empty_dataset_and_config_errors(enc, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="data.path: no images .* empty"):
        open_source("imagefolder", tmp_path / "empty")
    import tarfile
    (tmp_path / "w").mkdir()
    with tarfile.open(tmp_path / "w" / "00000.tar", "w"):
        pass
    with pytest.raises(ValueError, match="dataset is empty"):
        _encode(open_source("webdataset", tmp_path / "w"), tmp_path / "enc", enc, max_bad_fraction=0.99)
    assert not (tmp_path / "enc").exists()
    with pytest.raises(ValueError, match="data.source: unknown source 'lmdb'"):
        open_source("lmdb", tmp_path)
    with pytest.raises(FileNotFoundError, match="data.path"):
        open_source("imagefolder", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="data.path: 1 shard"):
        open_source("webdataset", str(tmp_path / "w" / "{00000..00001}.tar"))
    with pytest.raises(FileNotFoundError, match="data.path"):
        open_source("hf", tmp_path / "nope")
    with pytest.raises(ValueError, match="data: option"):
        open_source("webdataset", tmp_path / "w", text_column="x")
    with pytest.raises(ValueError, match="data.image_size: 62 is not a multiple .* 4"):
        _encode(open_source("webdataset", tmp_path / "w"), tmp_path / "enc", enc, image_size=62)


def test_resize_and_centre_crop():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :10] = 255          # a white band on the far left is cropped away
    img[:, 30:50, 1] = 200     # a green band in the middle stays in the middle
    out = decode_image(img, 32)
    assert out.shape == (32, 32, 3) and out[:, :4].max() < 5 and out[:, 14:18, 1].min() > 190
    assert np.array_equal(decode_image(img[:, 20:60], 40), img[:, 20:60])  # already the size: untouched


def test_webdataset_epoch_shuffle_is_seeded_and_resumable(pool, tmp_path):
    _, items = pool
    write_webdataset(items, tmp_path / "wds", shard_size=5)
    src = open_source("webdataset", str(tmp_path / "wds" / "{00000..00004}.tar"))
    keys = lambda it: [r.key for r in it]  # noqa: E731
    e0 = keys(src.records(seed=7, epoch=0))
    assert sorted(e0) == [it[0] for it in items] and e0 != [it[0] for it in items]
    assert e0 == keys(src.records(seed=7, epoch=0)) and e0 != keys(src.records(seed=7, epoch=1))
    assert keys(src.records(seed=7, epoch=0, start=13)) == e0[13:]


# ------------------------------------------------------------------------------------------------ CLIP scorer
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIP (word-level tokenizer, 32 px), logit_scale set to ln 100 (tests/helpers.py)."""
    from helpers import write_tiny_clip
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_clip_score_maths_by_hand(tiny_clip, pool):
    from transformers import CLIPModel, CLIPProcessor
    from sana_core.data.clip_score import ClipScorer
    _, items = pool
    imgs, caps = [it[1] for it in items[:5]], [it[2] for it in items[:5]]
    got = ClipScorer(tiny_clip, batch_size=2).score(imgs, caps)
    model, proc = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        enc = proc(text=caps, images=[Image.fromarray(a) for a in imgs], return_tensors="pt", padding=True)
        v = model.visual_projection(model.vision_model(pixel_values=enc["pixel_values"]).pooler_output).numpy()
        out = model(**enc)
    vt = out.text_embeds.numpy()
    hand = [100 * float(v[i] @ vt[i]) / (np.linalg.norm(v[i]) * np.linalg.norm(vt[i])) for i in range(5)]
    assert got == pytest.approx(hand, abs=1e-4)
    # CLIP's own logits at logit_scale = ln 100 are 100·cos: the diagonal is the score
    assert got == pytest.approx(np.diag(out.logits_per_image.numpy()), abs=1e-3)


def test_clip_score_source_and_selection(tiny_clip, pool, enc, tmp_path):
    """Scores of a whole source → the kept rows → a ShardStream over that subset of the encoded pool."""
    import pandas as pd
    from sana_core.data.clip_score import ClipScorer, score_source, select
    root, items = pool
    src = open_source("shapes", root / "shapes")
    table, counts = score_source(src, ClipScorer(tiny_clip), SIZE)
    assert list(table.columns) == ["key", "caption", "clip_score"] and len(table) == 24 and counts["n_bad"] == 0
    assert table["caption"].tolist() == [it[2] for it in items]
    sel = select(table, None, 0.25)
    kept = sel[sel["keep"]]
    assert len(kept) == 6 and kept["clip_score"].min() >= sel.loc[~sel["keep"], "clip_score"].max()
    _encode(src, tmp_path / "enc", enc)
    stream = ShardStream(tmp_path / "enc", rows=ShardStream(tmp_path / "enc").rows_of(kept["key"]))
    assert len(stream) == 6 and stream.captions() == kept["caption"].tolist()
    with pytest.raises(KeyError, match="nope"):
        stream.rows_of(["nope"])
    t = pd.DataFrame({"key": list("abcdef"), "clip_score": [30.0, 10.0, 26.0, 25.0, 40.0, 24.9]})
    assert select(t, 25.0)["keep"].tolist() == [True, False, True, True, True, False]
    assert select(t, None, 0.5)["keep"].tolist() == [True, False, True, False, True, False]
    assert select(t, 27.0, 0.5)["keep"].tolist() == [True, False, False, False, True, False]
    assert select(t, None, 0.01)["keep"].sum() == 1
    with pytest.raises(ValueError, match="no row kept"):
        select(t, 50.0)
    with pytest.raises(ValueError, match="curate.top_fraction"):
        select(t, None, 1.5)
    with pytest.raises(FileNotFoundError, match="curate.clip_path"):
        ClipScorer(tmp_path / "nope")


def test_hf_splits_columns_and_keys(pool, tmp_path):
    import datasets
    _, items = pool
    mk = lambda its: datasets.Dataset.from_dict(  # noqa: E731
        {"image": [Image.fromarray(it[1]) for it in its], "text": [it[2] for it in its],
         "uid": [f"id{it[0]}" for it in its]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                    "uid": datasets.Value("string")}))
    datasets.DatasetDict({"train": mk(items[:4]), "val": mk(items[4:6])}).save_to_disk(str(tmp_path / "dd"))
    recs = list(open_source("hf", tmp_path / "dd", split="val", key_column="uid"))
    assert [r.key for r in recs] == ["id00000004", "id00000005"] and [r.caption for r in recs] == \
        [items[4][2], items[5][2]]
    assert np.array_equal(decode_image(recs[0].image, SIZE), items[4][1])
    with pytest.raises(ValueError, match="data.split: 'test'"):
        open_source("hf", tmp_path / "dd", split="test")
    with pytest.raises(ValueError, match="data.image_column: column 'img'"):
        open_source("hf", tmp_path / "dd", image_column="img")
