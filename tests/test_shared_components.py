"""Shared pipeline components (sana_core/components.py): model folders hold their text encoder, tokenizer and codec
files as hard links into one content-addressed store, stay plain folders that stock `SanaPipeline` loads with the same
images as unshared folders, and MLflow logs a model folder without them (a tag points at them)."""
import json
import os

import numpy as np
import pytest
import torch

from sana_core.components import SHARED, file_digest, prune, shared_components
from sana_core.latents import build_codec
from sana_core.model import build_transformer
from sana_core.sample import load_sampler, save_pipeline
from sana_core.text import build_text_encoder

PROMPTS = ["a photo of a red circle", "a photo of two blue squares"]


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _stock_images(folder):
    from diffusers import SanaPipeline
    pipe = SanaPipeline.from_pretrained(str(folder))
    return pipe(PROMPTS, height=32, width=32, num_inference_steps=2, guidance_scale=4.5, use_resolution_binning=False,
                complex_human_instruction=None, max_sequence_length=24, output_type="np",
                generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("shared")
    codec, te = build_codec("smoke"), build_text_encoder({"max_length": 24})
    tr0, tr1 = build_transformer("smoke", seed=0), build_transformer("smoke", seed=1)
    for tr in (tr0, tr1):
        with torch.no_grad():
            tr.caption_norm.weight.fill_(1.0)
    store = d / "models" / "shared"
    plain = save_pipeline(d / "plain", tr0, codec, te, {"steps": 2})
    a = save_pipeline(d / "models" / "a", tr0, codec, te, {"steps": 2}, shared_store=store)
    b = save_pipeline(d / "models" / "b", tr1, codec, te, {"steps": 2}, shared_store=store)
    s = load_sampler(a)                       # re-saved after loading: the vae config gains _name_or_path
    c = save_pipeline(d / "models" / "c", s.transformer, s.codec, s.text, {"steps": 2}, shared_store=store)
    return d, store, plain, a, b, c


def test_folders_share_component_files(folders):
    d, store, plain, a, b, c = folders
    for comp in SHARED:
        assert _files(a / comp) == _files(b / comp) == _files(plain / comp) and _files(a / comp)
        for f in _files(a / comp):
            assert os.path.samefile(a / comp / f, b / comp / f)                  # same inode
            assert os.path.samefile(a / comp / f, store / file_digest(a / comp / f))
            assert (a / comp / f).read_bytes() == (plain / comp / f).read_bytes()
    for f in _files(a / "transformer"):                                          # the transformer is each its own
        assert not os.path.samefile(a / "transformer" / f, b / "transformer" / f)
    # re-saved from a loaded folder: weights still shared although config.json differs
    assert os.path.samefile(a / "vae/diffusion_pytorch_model.safetensors", c / "vae/diffusion_pytorch_model.safetensors")
    assert os.path.samefile(a / "text_encoder/model.safetensors", c / "text_encoder/model.safetensors")
    # one copy on disk: the store holds each distinct file once
    sizes = {file_digest(p): p.stat().st_size for comp in SHARED for m in (a, b, c) for p in (m / comp).rglob("*")
             if p.is_file()}
    assert sorted(p.name for p in store.iterdir()) == sorted(sizes)
    assert shared_components(a) == shared_components(b) and set(shared_components(a)) == set(SHARED)
    assert shared_components(plain) == {}
    if os.geteuid() != 0:                                                        # root ignores file modes
        with pytest.raises(PermissionError):
            open(a / "text_encoder/model.safetensors", "r+b")


def test_shared_folders_load_in_stock_pipeline_with_the_same_images(folders):
    d, store, plain, a, b, c = folders
    ref = _stock_images(plain)
    assert np.array_equal(_stock_images(a), ref)                                 # bit-identical to an unshared folder
    assert np.array_equal(_stock_images(c), ref)
    other = _stock_images(b)
    assert np.isfinite(other).all() and not np.array_equal(other, ref)          # b: its own transformer


def test_prune_drops_only_unreferenced_store_files(folders, tmp_path):
    import shutil
    d, store, plain, a, b, c = folders
    copy = tmp_path / "store"
    shutil.copytree(store, copy, copy_function=os.link)                          # nlink ≥ 3: still referenced
    assert prune(copy) == 0
    n = len(list(copy.iterdir()))
    (tmp_path / "lonely").write_bytes(b"x")
    os.link(tmp_path / "lonely", copy / "deadbeef")
    (tmp_path / "lonely").unlink()
    assert prune(copy) == 1 and len(list(copy.iterdir())) == n


def test_mlflow_logs_the_model_folder_without_shared_components(folders):
    from flows.stage_runner import StageContext
    d, store, plain, a, b, c = folders

    class Client:
        def __init__(self):
            self.dirs, self.files, self.tags = [], [], {}

        def log_artifacts(self, run, path, name):
            self.dirs.append((os.path.relpath(path, d), name))

        def log_artifact(self, run, path, name=None):
            self.files.append((os.path.relpath(path, d), name))

        def set_tag(self, run, k, v):
            self.tags[k] = v

    ctx = StageContext("sft", None, d)
    ctx.client, ctx.run_id = Client(), "r"
    ctx._log_artifacts({"model_dir": "models/a"})
    logged = {p for p, _ in ctx.client.dirs + ctx.client.files}
    assert ("models/a/transformer", "model/transformer") in ctx.client.dirs
    assert {"models/a/model_index.json", "models/a/sana15.json"} <= logged
    assert not any(p.startswith(f"models/a/{comp}") for p in logged for comp in SHARED)
    meta = json.loads((a / "sana15.json").read_text())["shared_components"]
    for comp in SHARED:
        assert ctx.client.tags[f"artifact.model.{comp}"] == f"sha256:{meta[comp]} {a / comp}"
    ctx.client = Client()
    ctx._log_artifacts({"model_dir": "plain"})                                   # an unshared folder: logged whole
    assert ctx.client.dirs == [("plain", "model")] and not ctx.client.tags
