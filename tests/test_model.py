"""sana_core.model: profiles, parameter counts, SANA init (sana15-method.md §3, stack-notes §1)."""
import math

import pytest
import torch
from diffusers.models.normalization import RMSNorm

from sana_core.model import PROFILES, build_transformer, param_count, resolve_config


@pytest.mark.parametrize("profile,n", [("paper_1.6b", 1_604_641_952), ("paper_4.8b", 4_721_825_952),
                                       ("tiny", 1_796_368)])
def test_param_counts_exact(profile, n):
    assert param_count(profile) == n


def test_paper_architecture_on_meta():
    m = build_transformer("paper_1.6b", device="meta")
    c = m.config
    assert (c.num_layers, c.num_attention_heads * c.attention_head_dim, c.attention_head_dim) == (20, 2240, 32)
    assert (c.num_cross_attention_heads, c.cross_attention_head_dim, c.caption_channels) == (20, 112, 2304)
    assert (c.in_channels, c.out_channels, c.patch_size, c.sample_size) == (32, 32, 1, 32)
    assert m.patch_embed.pos_embed is None                      # no positional embedding
    b = m.transformer_blocks[0]
    for attn in (b.attn1, b.attn2):                              # QK RMSNorm over all 2240 channels, not per head
        assert isinstance(attn.norm_q, RMSNorm) and isinstance(attn.norm_k, RMSNorm)
        assert tuple(attn.norm_q.weight.shape) == (2240,) and tuple(attn.norm_k.weight.shape) == (2240,)
    assert tuple(b.ff.conv_point.weight.shape) == (2240, 5600, 1, 1)   # GLUMBConv FFN 5600, no bias
    assert b.ff.conv_point.bias is None
    assert len(build_transformer("paper_4.8b", device="meta").transformer_blocks) == 60


def test_sana_init_values():
    m = build_transformer("tiny", init="sana", seed=0)
    assert torch.all(m.caption_norm.weight == 0.01)
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Linear):
            assert mod.bias is None or torch.all(mod.bias == 0), name
    # xavier_uniform bound on a plain Linear (attn1.to_q 128→128), and on the patch-embed conv viewed as a Linear
    w = m.transformer_blocks[0].attn1.to_q.weight
    bound = math.sqrt(6 / (128 + 128))
    assert w.abs().max() <= bound and abs(w.std().item() - bound / math.sqrt(3)) < 0.01
    pw = m.patch_embed.proj.weight
    assert pw.abs().max() <= math.sqrt(6 / (16 + 128)) and torch.all(m.patch_embed.proj.bias == 0)
    # N(0, 0.02) on timestep MLP, t_block and caption MLP (98k-ish samples: std within 5%)
    for lin in (m.time_embed.emb.timestep_embedder.linear_1, m.time_embed.linear, m.caption_projection.linear_1):
        assert abs(lin.weight.std().item() - 0.02) < 0.001
    # SANA zero-inits nothing
    assert m.transformer_blocks[0].attn2.to_out[0].weight.abs().sum() > 0 and m.proj_out.weight.abs().sum() > 0


def test_pixart_and_diffusers_init():
    p = build_transformer("smoke", init="pixart", seed=0)
    for b in p.transformer_blocks:
        assert torch.all(b.attn2.to_out[0].weight == 0) and torch.all(b.attn2.to_out[0].bias == 0)
    assert torch.all(p.proj_out.weight == 0) and torch.all(p.proj_out.bias == 0)
    assert torch.all(p.caption_norm.weight == 0.01)
    d = build_transformer("smoke", init="diffusers", seed=0)
    assert torch.all(d.caption_norm.weight == 1.0)
    x, enc = torch.randn(2, 16, 8, 8), torch.randn(2, 5, 384)
    out = p(x, encoder_hidden_states=enc, timestep=torch.tensor([10.0, 900.0]), return_dict=False)[0]
    assert torch.all(out == 0)            # zero proj_out → zero velocity at init


def test_init_deterministic_and_rng_untouched():
    state = torch.get_rng_state()
    a = build_transformer("smoke", seed=7).state_dict()
    b = build_transformer("smoke", seed=7).state_dict()
    c = build_transformer("smoke", seed=8).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer_blocks.0.attn1.to_q.weight"], c["transformer_blocks.0.attn1.to_q.weight"])


def test_overrides_and_forward_shape():
    m = build_transformer("tiny", num_layers=2, seed=0)
    assert m.config.num_layers == 2 and len(m.transformer_blocks) == 2
    m2 = build_transformer({"profile": "smoke", "num_layers": 3, "init": "pixart", "seed": 0})
    assert len(m2.transformer_blocks) == 3 and torch.all(m2.proj_out.weight == 0)   # params.yaml `model:` form
    x = torch.randn(3, 16, 8, 8)
    out = m(x, encoder_hidden_states=torch.randn(3, 24, 384), encoder_attention_mask=torch.ones(3, 24),
            timestep=torch.tensor([1.0, 500.0, 999.0]), return_dict=False)[0]
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("args,kw,match", [
    (("nano",), {}, "nano"),
    (("tiny",), {"num_layerz": 4}, "num_layerz"),
    (({"profile": "tiny", "widht": 3},), {}, "widht"),
    (("tiny",), {"init": "kaiming"}, "kaiming"),
    (({"profile": "tiny", "init": "xavier"},), {}, "xavier"),
    (("tiny",), {"cross_attention_dim": None}, "cross_attention_dim"),
])
def test_bad_config_errors(args, kw, match):
    with pytest.raises(ValueError, match=match):
        build_transformer(*args, device="meta", **kw)


def test_profiles_resolve():
    for name in PROFILES:
        cfg = resolve_config(name)
        assert cfg["qk_norm"] == "rms_norm_across_heads" and cfg["interpolation_scale"] is None
