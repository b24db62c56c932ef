"""sana_core.sample: Flow-DPM-Solver / Euler with CFG, per-seed determinism, model folders for stock SanaPipeline,
GenEval layout, and the `sana15 generate` command."""
import json

import numpy as np
import pytest
import torch

from sana_core.latents import build_codec
from sana_core.model import build_transformer
from sana_core.sample import (Sampler, SamplingConfig, generate_layout, initial_noise, load_sampler, save_pipeline)
from sana_core.text import build_text_encoder

STEPS = 4
PROMPTS = ["a photo of a red circle", "a photo of two blue squares", "a photo of a green triangle"]


@pytest.fixture(scope="module")
def parts():
    tr = build_transformer("smoke", seed=0)
    with torch.no_grad():                     # make the text path matter at random init
        tr.caption_norm.weight.fill_(1.0)
    return tr, build_codec("smoke"), build_text_encoder({"max_length": 24})


@pytest.fixture(scope="module")
def sampler(parts):
    return Sampler(*parts, {"steps": STEPS})


@pytest.fixture(scope="module")
def model_dir(parts, tmp_path_factory):
    return save_pipeline(tmp_path_factory.mktemp("models") / "smoke", *parts, {"steps": STEPS})


def test_noise_depends_only_on_seed():
    a = initial_noise([3, 5, 3], (16, 8, 8))
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert torch.equal(initial_noise([5], (16, 8, 8))[0], a[1])


def test_sample_alone_equals_in_batch(sampler):
    batch = sampler.generate(PROMPTS, [11, 12, 13], output="float")
    assert batch.shape == (3, 3, 32, 32) and batch.min() >= 0 and batch.max() <= 1
    alone = sampler.generate([PROMPTS[1]], [12], output="float")
    assert (alone[0] - batch[1]).abs().max() < 1e-5                 # measured ~7e-7
    # split across forward batches of 2 → same images
    split = sampler.generate(PROMPTS, [11, 12, 13], output="float", batch_size=2)
    assert (split - batch).abs().max() < 1e-5
    u8 = sampler.generate(PROMPTS[:1], [11])
    assert u8.dtype == np.uint8 and u8.shape == (1, 32, 32, 3)
    assert np.abs(u8[0].astype(int) - np.round(batch[0].permute(1, 2, 0).numpy() * 255)).max() <= 1


def test_cfg_solver_and_mask_options_change_the_result(sampler):
    base = sampler.generate(PROMPTS[:2], [1, 1], output="float")
    assert (base[0] - base[1]).abs().max() > 1e-3                   # the prompt matters (same seed)
    no_cfg = sampler.generate(PROMPTS[:2], [1, 1], output="float", guidance_scale=1.0)
    null_mask = sampler.generate(PROMPTS[:2], [1, 1], output="float", uncond_mask="null")
    euler = sampler.generate(PROMPTS[:2], [1, 1], output="float", solver="euler")
    for other in (no_cfg, null_mask, euler):
        assert torch.isfinite(other).all() and (other - base).abs().max() > 1e-3
    # sample_latents: on_step per solver step, train mode restored, [L,C] null embedding accepted
    from sana_core.sample import sample_latents
    tr, te = sampler.transformer, sampler.text
    e, m = te.encode(PROMPTS[:1])
    ne, _ = te.encode_null()
    seen = []
    tr.train()
    z = sample_latents(tr, e, m, ne[0], initial_noise([1], (16, 8, 8)), steps=3, on_step=lambda i, t, x: seen.append(i))
    assert seen == [0, 1, 2] and tr.training and z.shape == (1, 16, 8, 8)
    tr.eval()
    with pytest.raises(ValueError, match="solver"):
        sampler.generate(PROMPTS[:1], [0], solver="heun")
    with pytest.raises(ValueError, match="seeds"):
        sampler.generate(PROMPTS, [0])
    with pytest.raises(ValueError, match="stepz"):
        SamplingConfig.from_dict({"stepz": 3})


def test_stock_sana_pipeline_loads_and_matches(model_dir, sampler, parts):
    from diffusers import SanaPipeline
    meta = json.loads((model_dir / "sana15.json").read_text())
    assert meta["max_sequence_length"] == 24 and meta["steps"] == STEPS and meta["guidance_scale"] == 4.5
    assert meta["height"] == 32 and meta["solver"] == "dpm" and meta["complex_human_instruction"] is None
    pipe = SanaPipeline.from_pretrained(str(model_dir))
    seeds = [7, 8]
    kw = dict(height=32, width=32, num_inference_steps=STEPS, guidance_scale=4.5, use_resolution_binning=False,
              complex_human_instruction=None, max_sequence_length=24, output_type="pt")
    gens = lambda: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    # 1) stock call with strings: it lowercases/strips like us, and masks its "" negative with the "" mask
    stock = pipe(["  A photo of a RED circle", PROMPTS[1]], generator=gens(), **kw).images
    ours_null = sampler.generate(PROMPTS[:2], seeds, output="float", uncond_mask="null")
    assert (stock - ours_null).abs().max() < 1e-5                   # measured 0.0
    # 2) SANA semantics (uncond keeps the prompt's mask) by passing our embeddings
    te = parts[2]
    e, m = te.encode(PROMPTS[:2])
    ne, _ = te.encode_null()
    stock2 = pipe(prompt_embeds=e, prompt_attention_mask=m, negative_prompt=None,
                  negative_prompt_embeds=ne.expand(2, -1, -1), negative_prompt_attention_mask=m,
                  generator=gens(), **kw).images
    ours = sampler.generate(PROMPTS[:2], seeds, output="float")
    assert (stock2 - ours).abs().max() < 1e-5                       # measured 0.0
    assert (ours - ours_null).abs().max() > 1e-3                    # the two uncond masks really differ
    # 3) our loader on the same folder reproduces the images
    again = load_sampler(model_dir).generate(PROMPTS[:2], seeds, output="float")
    assert (again - ours).abs().max() < 1e-6


def test_save_pipeline_guards(parts, tmp_path):
    tr, codec, te = parts
    pruned = build_transformer("smoke", seed=0)
    del pruned.transformer_blocks[1]                                 # no register_to_config → refuse to save
    with pytest.raises(ValueError, match="num_layers"):
        save_pipeline(tmp_path / "m", pruned, codec, te)
    wide = build_transformer("smoke", seed=0, in_channels=4, out_channels=4)
    with pytest.raises(ValueError, match="in_channels"):
        save_pipeline(tmp_path / "m", wide, codec, te)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m*"))
    with pytest.raises(FileNotFoundError, match="missing_model"):
        load_sampler(tmp_path / "missing_model")


def test_generate_layout(model_dir, tmp_path):
    from sana_core.geneval.layout import iter_layout
    from sana_core.geneval.prompts import meta_counting, meta_single
    metas = [meta_single("circle"), meta_counting("square", 2), meta_single("triangle")]
    out = generate_layout(model_dir, metas, 2, tmp_path / "gen", seeds=[0, 1], batch_size=4)
    rows = list(iter_layout(out))
    assert [r[0] for r in rows] == [0, 1, 2] and [r[1]["prompt"] for r in rows] == [m["prompt"] for m in metas]
    assert all(len(r[2]) == 2 and r[2][0][1].shape == (32, 32, 3) for r in rows)
    # per-seed determinism survives prompt batching
    s = load_sampler(model_dir)
    ref = s.generate([metas[1]["prompt"]], [1])
    assert np.abs(rows[1][2][1][1].astype(int) - ref[0].astype(int)).max() <= 1


def test_cli_generate(model_dir, tmp_path, capsys):
    from PIL import Image
    from flows.cli import main
    missing = tmp_path / "no_such_model"
    assert main(["generate", "--model", str(missing), "--prompt", "a photo of a red circle", "--out",
                 str(tmp_path / "g.png")]) == 2
    assert str(missing) in capsys.readouterr().err and not (tmp_path / "g.png").exists()
    out = tmp_path / "grid.png"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a photo of a red circle", "--prompt",
                 "a photo of a blue square", "--n", "3", "--steps", "2", "--out", str(out)]) == 0
    g = np.asarray(Image.open(out))
    assert g.shape == (2 * 32 + 3 * 2, 3 * 32 + 4 * 2, 3)           # 2 rows × 3 cols, 2 px padding
