"""Device / dtype placement (sana_core/device.py) of every model-running component: the resolver (`auto` = this
process's CUDA device + bf16 when present, CPU fp32 otherwise), params validation, the CPU default unchanged, and
bf16 runs of the text encoder, codec, sampler and block importance finite and close to fp32 on the CPU."""
import numpy as np
import pytest
import torch

from sana_core.device import resolve
from sana_core.latents import build_codec, load_codec
from sana_core.model import build_transformer
from sana_core.sample import load_sampler, save_pipeline
from sana_core.text import build_text_encoder

PROMPTS = ["a photo of a red circle", "a photo of two blue squares", "a photo of a green triangle"]


def test_resolver_cpu_defaults_and_errors():
    assert not torch.cuda.is_available()                      # this machine; the CUDA branch is tested below
    assert resolve() == (torch.device("cpu"), torch.float32)
    assert resolve("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve(None, "float16")[1] == torch.float16
    with pytest.raises(ValueError, match="text.device: 'cuda' requested but CUDA is not available"):
        resolve("cuda", "auto", "text")
    with pytest.raises(ValueError, match="codec.device: 'tpu'"):
        resolve("tpu", "auto", "codec")
    with pytest.raises(ValueError, match="judge.dtype: 'int8'"):
        resolve("auto", "int8", "judge")


def test_resolver_auto_on_cuda_picks_the_local_rank_and_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve() == (torch.device("cuda", 1), torch.bfloat16)
    assert resolve("auto", "float32") == (torch.device("cuda", 1), torch.float32)
    assert resolve("cpu") == (torch.device("cpu"), torch.float32)     # auto dtype follows the device
    with pytest.raises(ValueError, match="only 2 CUDA"):
        resolve("cuda:2")


def test_params_validate_placement_keys():
    from flows import params as P
    p = P.load_profile("tiny")
    for sec in ("text", "codec", "sample", "importance", "judge"):
        assert (p[sec]["device"], p[sec]["dtype"]) == ("auto", "auto")
    for sec, key, val in (("sample", "device", "gpu"), ("judge", "dtype", "int8"), ("text", "device", "cuda")):
        q = P.load_profile("tiny")
        q[sec][key] = val
        with pytest.raises(ValueError, match=f"params: {sec}.{key}"):
            P.validate(q)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tr = build_transformer("smoke", seed=0)
    with torch.no_grad():
        tr.caption_norm.weight.fill_(1.0)
    return save_pipeline(tmp_path_factory.mktemp("placement") / "m", tr, build_codec("smoke"),
                         build_text_encoder({"max_length": 24}), {"steps": 3})


def test_cpu_default_is_bit_identical(model_dir):
    ref = load_sampler(model_dir).generate(PROMPTS, [0, 1, 2], output="float")
    auto = {c: {"device": "auto", "dtype": "auto"} for c in ("transformer", "text_encoder", "vae")}
    s = load_sampler(model_dir, placement=auto)
    assert {p.dtype for m in (s.transformer, s.text.model, s.codec.vae) for p in m.parameters()} == {torch.float32}
    assert torch.equal(s.generate(PROMPTS, [0, 1, 2], output="float"), ref)
    with pytest.raises(ValueError, match="vae.dtype"):
        load_sampler(model_dir, placement={"vae": {"dtype": "half-ish"}})
    with pytest.raises(ValueError, match="unknown component"):
        load_sampler(model_dir, placement={"unet": {}})


def test_bf16_components_run_finite_and_close_on_cpu(model_dir):
    e32, m32 = build_text_encoder({"max_length": 24}).encode(PROMPTS)
    te = build_text_encoder({"max_length": 24, "dtype": "bfloat16"})
    assert te.model.dtype == torch.bfloat16
    e16, m16 = te.encode(PROMPTS)
    assert e16.dtype == torch.float32 and torch.isfinite(e16).all() and torch.equal(m16, m32)
    cos = torch.nn.functional.cosine_similarity(e16[m32 > 0], e32[m32 > 0], dim=-1)
    assert cos.min() > 0.99

    codec = load_codec(model_dir / "vae", "cpu", "bfloat16")
    assert codec.vae.dtype == torch.bfloat16
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z16, z32 = codec.encode(x), load_codec(model_dir / "vae").encode(x)
    assert z16.dtype == torch.float32 and torch.isfinite(z16).all() and (z16 - z32).abs().max() < 0.05 * z32.abs().max()

    ref = load_sampler(model_dir).generate(PROMPTS, [0, 1, 2], output="float")
    s = load_sampler(model_dir, dtype="bfloat16")
    assert s.transformer.dtype == torch.bfloat16
    img = s.generate(PROMPTS, [0, 1, 2], output="float")
    assert torch.isfinite(img).all() and (img - ref).abs().mean() < 0.02

    from sana_core.importance import block_importance
    calib = {"emb": e32, "mask": m32, "x0": z32[[0, 1, 0]]}
    bi32 = block_importance(load_sampler(model_dir).transformer, calib, [0.9, 0.5, 0.1])["bi"]
    bi16 = block_importance(s.transformer, calib, [0.9, 0.5, 0.1])["bi"]
    assert np.isfinite(bi16).all() and np.allclose(bi16, bi32, atol=0.02)


def test_stage_loader_places_each_component_by_its_section(model_dir):
    """flows/stages/_common.load_model: transformer ← `sample` (or `importance`), text encoder ← `text`, codec ←
    `codec`; without params (training stages) everything on the CPU in fp32."""
    from flows import params as P
    from flows.stages import _common as C
    p = P.load_profile("tiny")
    p["sample"]["dtype"], p["text"]["dtype"], p["importance"]["dtype"] = "bfloat16", "float16", "float32"
    s = C.load_model(model_dir.parent, model_dir.name, p)
    assert (s.transformer.dtype, s.text.model.dtype, s.codec.vae.dtype) == (torch.bfloat16, torch.float16, torch.float32)
    s = C.load_model(model_dir.parent, model_dir.name, p, "importance")
    assert s.transformer.dtype == torch.float32
    p["sample"]["dtype"] = "bfloat16"
    s = C.load_model(model_dir.parent, model_dir.name)
    assert {s.transformer.dtype, s.text.model.dtype, s.codec.vae.dtype} == {torch.float32}
