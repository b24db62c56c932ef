"""The stages on the data seam (docs/data.md): the same image–caption pairs as an image folder, as webdataset shards
and as a saved `datasets` dataset, each through data → encode → pretrain_base with the smoke profile (through
flows.stage_runner.run_stage, no DVC), give identical latents, captions and trained weights; a training stage
resumed mid-shard continues on the same samples; bad records are counted, and past data.max_bad_fraction the
encode stage fails and leaves no data/cache."""
from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flows import params as P
from flows.stage_runner import run_stage
from sana_core.data.imagefolder import write_imagefolder
from sana_core.data.stream import ShardStream
from sana_core.data.webdataset import write_webdataset
from sana_core.geneval.dataset import build_dataset, load_images, load_manifest
from sana_core.geneval.layout import read_metadata_jsonl
from sana_core.geneval.splits import stratified

pytestmark = pytest.mark.usefixtures("one_thread")
N = 24


def _params(root: Path, **edits) -> dict:
    P.use_profile("smoke", root)
    d = P.read_yaml(root / "params.yaml", roundtrip=True)
    d["train"]["num_threads"] = 1
    d["encode"]["shard_size"] = 10          # several shards, the last one short: batches cross shard boundaries
    for dotted, v in edits.items():
        sec, key = dotted.split(".")
        d[sec][key] = v
    P.write_yaml_atomic(d, root / "params.yaml")
    return P.load(root)


def _run(root: Path, name: str) -> dict:
    fn = getattr(importlib.import_module(f"flows.stages.{name}"), name)
    return run_stage(name, fn, argv=[], root=root)


def _items(pool: Path):
    man, images = load_manifest(pool), load_images(pool)
    for row, img in zip(man.to_dict("records")[:N], images[:N]):
        yield f"{int(row['index']):08d}", img, row["caption"], {}


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    """The first N smoke-world pairs as an image folder, webdataset shards and a saved `datasets` dataset."""
    import datasets
    base = tmp_path_factory.mktemp("datasets")
    from flows.stages._common import world_cfg
    build_dataset(world_cfg(P.load_profile("smoke")), base / "pool")
    write_imagefolder(_items(base / "pool"), base / "folder")
    write_webdataset(_items(base / "pool"), base / "wds", shard_size=7)
    from PIL import Image
    rows = list(_items(base / "pool"))
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(r[1]) for r in rows], "text": [r[2] for r in rows],
                                     "id": [r[0] for r in rows]},
                                    features=datasets.Features({"image": datasets.Image(), "text": datasets.Value(
                                        "string"), "id": datasets.Value("string")}))
    ds.save_to_disk(str(base / "hf"))
    return base


SOURCES = {"imagefolder": ("folder", {}), "webdataset": ("wds/{00000..00003}.tar", {}),
           "hf": ("hf", {"data.key_column": "id"})}


@pytest.fixture(scope="module")
def runs(datasets_dir, tmp_path_factory):
    """data → codec (once) → encode → pretrain_base for each source."""
    old = os.environ.get("SANA15_TRACKING")
    os.environ["SANA15_TRACKING"] = "0"
    out, codec_dir = {}, None
    try:
        for src, (rel, extra) in SOURCES.items():
            root = tmp_path_factory.mktemp(src)
            _params(root, **{"data.source": src, "data.path": str(datasets_dir / rel), **extra})
            _run(root, "data")
            if codec_dir is None:
                _run(root, "codec")
                codec_dir = root / "models" / "codec"
            else:
                shutil.copytree(codec_dir, root / "models" / "codec")
            enc = _run(root, "encode")
            base = _run(root, "pretrain_base")
            out[src] = (root, enc, base)
    finally:
        if old is None:
            os.environ.pop("SANA15_TRACKING", None)
        else:
            os.environ["SANA15_TRACKING"] = old
    return out


def _weights(root: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(next((root / "models" / "pretrain_base" / "transformer").glob("*.safetensors")))


def test_every_source_gives_the_same_latents_captions_and_weights(runs):
    ref_root, ref_enc, _ = runs["imagefolder"]
    ref = ShardStream(ref_root / "data" / "cache")
    assert len(ref) == N and ref_enc["n"] == N and ref_enc["n_bad"] == 0 and ref_enc["n_shards"] == 3
    lat, emb, mask = ref.batch(np.arange(N))
    w0 = _weights(ref_root)
    for src in ("webdataset", "hf"):
        root, enc, base = runs[src]
        s = ShardStream(root / "data" / "cache")
        assert s.fingerprint() == ref.fingerprint(), src           # digest of every shard's latents + captions
        # the webdataset reader shuffles nothing at encode time: the same order as the folder
        assert s.captions() == ref.captions(), src
        l2, e2, m2 = s.batch(np.arange(N))
        assert torch.equal(l2, lat) and torch.equal(e2, emb) and torch.equal(m2, mask), src
        w = _weights(root)
        assert w.keys() == w0.keys() and all(torch.equal(w[k], w0[k]) for k in w0), src
        assert base["steps"] == runs["imagefolder"][2]["steps"] and base["loss"] == runs["imagefolder"][2]["loss"]
    # stage data: the brought dataset is read where it is; its eval prompts are GenEval's own 553
    d = json.loads((ref_root / "metrics" / "data.json").read_text())
    assert d["n_records"] == N and d["n_eval_iid"] == 553 and not (ref_root / "data" / "shapes" / "images").exists()
    # no exact evaluator for a brought dataset: no quick score; the grid shows the dataset's own captions
    assert runs["imagefolder"][2].get("geneval_quick") == {}


def test_resume_mid_shard_continues_on_the_same_samples(runs, tmp_path, monkeypatch):
    """pretrain_base killed after its step-2 checkpoint (data position 16 of 24: mid-epoch, inside the second
    10-row shard) and re-run with the full 4 steps resumes there and ends with the uninterrupted run's weights."""
    from flows.stages import _common as C
    src = runs["imagefolder"][0]
    for rel in ("data/shapes", "data/cache", "models/codec"):
        shutil.copytree(src / rel, tmp_path / rel)
    monkeypatch.setenv("SANA15_TRACKING", "0")
    path = P.load(src)["data"]["path"]
    _params(tmp_path, **{"data.source": "imagefolder", "data.path": path, "pretrain_base.steps": 2,
                         "train.checkpoint_every": 2})
    real_save = C.save_model_dir

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(C, "save_model_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "pretrain_base")
    assert (tmp_path / ".work/pretrain_base/checkpoints/step_2").is_dir()
    monkeypatch.setattr(C, "save_model_dir", real_save)
    _params(tmp_path, **{"data.source": "imagefolder", "data.path": path, "train.checkpoint_every": 2})
    m = _run(tmp_path, "pretrain_base")
    assert m["resumed_from"] == 2 and m["steps"] == 4
    w, w_full = _weights(tmp_path), _weights(src)
    assert all(torch.equal(w[k], w_full[k]) for k in w_full)


def test_bad_records_are_counted_and_too_many_fail_with_no_output(datasets_dir, runs, tmp_path):
    """A corrupt image and a missing caption among 24: skipped and counted (2/24 > 1 % fails; 10 % passes)."""
    folder = tmp_path / "bad"
    shutil.copytree(datasets_dir / "folder", folder)
    meta = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / meta[3]["file_name"]).write_bytes(b"not a png")
    meta[5].pop("text")
    (folder / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    root = tmp_path / "root"
    root.mkdir()
    os.environ["SANA15_TRACKING"] = "0"
    try:
        _params(root, **{"data.source": "imagefolder", "data.path": str(folder)})
        shutil.copytree(runs["imagefolder"][0] / "models" / "codec", root / "models" / "codec")
        _run(root, "data")
        with pytest.raises(ValueError, match="max_bad_fraction|bad"):
            _run(root, "encode")
        assert not (root / "data" / "cache").exists() and not list((root / "data").glob(".partial-*"))
        _params(root, **{"data.source": "imagefolder", "data.path": str(folder), "data.max_bad_fraction": 0.1})
        m = _run(root, "encode")
    finally:
        os.environ.pop("SANA15_TRACKING", None)
    assert m["n"] == N - 2 and m["n_bad"] == 2 and m["images_per_s"] > 0
    assert len(ShardStream(root / "data" / "cache")) == N - 2


def test_heldout_rows_calibrate_importance_and_are_never_trained_on(runs):
    """A brought dataset: the last importance.n_prompts rows of data/cache are the calibration set (x0 = their
    encoded latents, embeddings of their captions) and the quick-eval/grid prompts; the training stream leaves them
    out, also from a curated subset."""
    from flows.stages import _common as C
    from flows.stages.importance import heldout_inputs
    root = runs["imagefolder"][0]
    params = P.load(root)
    k = params["importance"]["n_prompts"]
    full = ShardStream(root / "data" / "cache")
    held = np.arange(N - k, N)
    train = C.train_data(params, root)
    assert len(train) == N - k and train.rows.tolist() == list(range(N - k))
    assert C.train_data(params, root, rows=[0, 5, N - 1]).rows.tolist() == [0, 5]
    # quick-eval / grid prompts of a brought dataset: GenEval's own prompts, or quick_eval.prompts (.txt or .jsonl)
    n = params["quick_eval"]["n_prompts"]
    assert [m["prompt"] for m in C.quick_prompts(root, params)] == \
        [m["prompt"] for m in stratified(read_metadata_jsonl(root / "data" / "shapes" / "eval_iid.jsonl"), n)]
    (root / "my_prompts.txt").write_text("a red circle\n\na blue square\n")
    p = {**params, "quick_eval": {**params["quick_eval"], "prompts": "my_prompts.txt"}}
    assert [m["prompt"] for m in C.quick_prompts(root, p)] == ["a red circle", "a blue square"][:n]
    sampler = C.load_model(root, C.model_path("pretrain_base"), params, "importance")
    calib = heldout_inputs(params, root, sampler)
    assert torch.equal(calib["x0"], full.batch(held)[0])
    emb, _ = sampler.text.encode(full.captions(held))
    assert torch.equal(calib["emb"], emb) and calib["emb"].shape[0] == k
