"""Depth growth (sana_core/growth.py): exact identity of partial preservation, replication layouts,
reload in stock diffusers, and the gradient pattern of identity blocks."""
import copy
import json

import pytest
import torch
from diffusers import SanaTransformer2DModel

from sana_core.growth import grow, growth_layout
from sana_core.surgery_io import check_depth, save_model
from helpers import random_smoke_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")




def smoke_model(depth=4, seed=0):
    return random_smoke_model(depth, seed)


def inputs(m, b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = m.config
    x = torch.randn(b, c.in_channels, 8, 8, generator=g)
    emb = torch.randn(b, 6, c.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6, [1, 0, 0, 0, 0, 0]])[:b]
    t = torch.tensor([0.0, 431.7, 999.0])[:b]  # several timesteps, one per sample
    return x, emb, t, mask


def run(m, x, emb, t, mask):
    with torch.no_grad():
        return m(x, emb, t, encoder_attention_mask=mask).sample


def truncated(m, k):
    ref = copy.deepcopy(m)
    ref.transformer_blocks = torch.nn.ModuleList(list(ref.transformer_blocks)[: len(ref.transformer_blocks) - k])
    ref.register_to_config(num_layers=len(ref.transformer_blocks))
    return ref


def state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("k", [0, 1, 2])
def test_partial_preservation_is_exactly_the_truncated_source(k):
    src = smoke_model()
    before = state(src)
    grown, layout = grow(src, 7, "partial_preservation", drop_last=k, seed=3)
    assert layout == list(range(4 - k)) + ["new"] * (3 + k)
    assert len(grown.transformer_blocks) == grown.config.num_layers == 7
    ref = truncated(src, k)
    for seed in (1, 2):
        args = inputs(src, seed=seed)
        out = run(grown, *args)
        assert out.abs().mean() > 0.1
        assert (out - run(ref, *args)).abs().max().item() == 0.0
        if k == 0:
            assert (out - run(src, *args)).abs().max().item() == 0.0
        else:  # not vacuous: the dropped blocks do change the output
            assert (out - run(src, *args)).abs().max().item() > 1e-3
    # source untouched (weights and config)
    assert src.config.num_layers == 4 and len(src.transformer_blocks) == 4
    assert all(torch.equal(v, src.state_dict()[n]) for n, v in before.items())
    # copied blocks and non-block params equal the source, and are independent copies
    for i in range(4 - k):
        for (n, p), q in zip(grown.transformer_blocks[i].named_parameters(), src.transformer_blocks[i].parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), n
    for n, p in grown.named_parameters():
        if not n.startswith("transformer_blocks."):
            assert torch.equal(p, src.get_parameter(n)), n


def test_new_blocks_identity_init_seeded_and_sana_like():
    src = smoke_model()
    g1, lay = grow(src, 6, seed=5)  # default drop_last = paper's 2
    assert lay == [0, 1, "new", "new", "new", "new"]
    torch.manual_seed(123)
    g2, _ = grow(src, 6, seed=5)
    torch.manual_seed(999)
    g3, _ = grow(src, 6, seed=6)
    for i in range(2, 6):
        b = g1.transformer_blocks[i]
        for lin in (b.attn1.to_out[0], b.attn2.to_out[0]):
            assert not lin.weight.any() and not lin.bias.any()
        assert not b.ff.conv_point.weight.any()
        for lin in (b.attn1.to_q, b.attn1.to_k, b.attn1.to_v, b.attn2.to_q, b.attn2.to_k, b.attn2.to_v):
            fan_out, fan_in = lin.weight.shape
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert lin.weight.abs().max() <= bound and lin.weight.std() > 0.3 * bound  # xavier-uniform
            assert lin.bias is None or not lin.bias.any()
        assert torch.equal(b.attn1.norm_q.weight, torch.ones_like(b.attn1.norm_q.weight))
        # seeded: same seed → same new blocks whatever the global RNG; other seed → different
        for (n, p), q, r in zip(b.named_parameters(), g2.transformer_blocks[i].parameters(),
                                g3.transformer_blocks[i].parameters()):
            assert torch.equal(p, q), n
            if p.std() > 0:  # random parameters (not the zeroed outputs or unit norm weights)
                assert not torch.equal(p, r), n
    # the four new blocks differ from each other
    assert not torch.equal(g1.transformer_blocks[2].attn1.to_q.weight, g1.transformer_blocks[3].attn1.to_q.weight)


def test_cyclic_layout_and_block_equality():
    src = smoke_model()
    grown, layout = grow(src, 10, "cyclic", seed=0)
    assert layout == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert grown.config.num_layers == 10
    for i, s in enumerate(layout):
        for p, q in zip(grown.transformer_blocks[i].parameters(), src.transformer_blocks[s].parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    for i in range(10):  # not equal to a different source block
        other = (layout[i] + 1) % 4
        assert not torch.equal(grown.transformer_blocks[i].attn1.to_q.weight, src.transformer_blocks[other].attn1.to_q.weight)
    # copies are independent: editing one replica leaves the others alone
    with torch.no_grad():
        grown.transformer_blocks[0].attn1.to_q.weight.add_(1.0)
    assert torch.equal(grown.transformer_blocks[4].attn1.to_q.weight, src.transformer_blocks[0].attn1.to_q.weight)


def test_block_replication_layout_and_errors():
    src = smoke_model()
    grown, layout = grow(src, 12, "block_replication")
    assert layout == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i, s in enumerate(layout):
        for p, q in zip(grown.transformer_blocks[i].parameters(), src.transformer_blocks[s].parameters()):
            assert torch.equal(p, q)
    with pytest.raises(ValueError, match="grow.target_depth"):
        grow(src, 10, "block_replication")
    assert growth_layout(20, 60, "block_replication")[:4] == [0, 0, 0, 1]  # paper: r = 3 for 20 → 60
    assert growth_layout(20, 60, "partial_preservation") == list(range(18)) + ["new"] * 42  # paper layout


@pytest.mark.parametrize("kwargs, key", [
    (dict(target_depth=4, strategy="cyclic"), "grow.target_depth"),
    (dict(target_depth=3, strategy="partial_preservation"), "grow.target_depth"),
    (dict(target_depth=8, strategy="net2net"), "grow.strategy"),
    (dict(target_depth=8, strategy="partial_preservation", drop_last=4), "grow.drop_last"),
    (dict(target_depth=8, strategy="partial_preservation", drop_last=-1), "grow.drop_last"),
    (dict(target_depth=8, strategy="cyclic", drop_last=1), "grow.drop_last"),
    (dict(target_depth=8, strategy="partial_preservation", keep=2, drop_last=1), "grow.keep"),
    (dict(target_depth=8, strategy="partial_preservation", keep=0), "grow.keep"),
])
def test_validation_errors_name_the_key(kwargs, key, monkeypatch):
    src = smoke_model()
    calls = []
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: calls.append(1))  # no copy/compute before the error
    with pytest.raises(ValueError, match=key):
        grow(src, **kwargs)
    assert not calls


def test_keep_equals_drop_last():
    src = smoke_model()
    a, la = grow(src, 6, keep=3, seed=1)
    b, lb = grow(src, 6, drop_last=1, seed=1)
    assert la == lb == [0, 1, 2, "new", "new", "new"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_new_blocks_follow_model_dtype():
    src = smoke_model().double()
    grown, _ = grow(src, 5, drop_last=0)
    assert {p.dtype for p in grown.parameters()} == {torch.float64}
    args = [a.double() if a.is_floating_point() else a for a in inputs(src)]
    assert (run(grown, *args) - run(src, *args)).abs().max().item() == 0.0


def test_grown_folder_reloads_in_stock_diffusers(tmp_path):
    src = smoke_model()
    grown, layout = grow(src, 6, drop_last=2, seed=2)
    out = save_model(grown, tmp_path / "grown", extra_json={"growth_layout.json": layout})
    assert json.loads((out / "growth_layout.json").read_text()) == layout
    assert json.loads((out / "config.json").read_text())["num_layers"] == 6
    re = SanaTransformer2DModel.from_pretrained(out).eval()
    assert re.config.num_layers == 6 and len(re.transformer_blocks) == 6
    args = inputs(src)
    assert (run(re, *args) - run(grown, *args)).abs().max().item() == 0.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_identity_blocks_start_learning():
    src = smoke_model()
    grown, layout = grow(src, 6, drop_last=2, seed=0)
    grown.train()
    x, emb, t, mask = inputs(src)
    target = torch.randn_like(x)

    def step():
        grown.zero_grad(set_to_none=False)
        out = grown(x, emb, t, encoder_attention_mask=mask).sample
        (out - target).pow(2).mean().backward()

    step()
    new = [grown.transformer_blocks[i] for i, s in enumerate(layout) if s == "new"]
    for b in new:
        for lin in (b.attn1.to_q, b.attn1.to_k, b.attn1.to_v, b.attn2.to_q, b.attn2.to_k, b.attn2.to_v):
            assert not lin.weight.grad.any()
        assert not b.ff.conv_inverted.weight.grad.any() and not b.ff.conv_depth.weight.grad.any()
        for p in (b.attn1.to_out[0].weight, b.attn1.to_out[0].bias, b.attn2.to_out[0].weight,
                  b.attn2.to_out[0].bias, b.ff.conv_point.weight):
            assert p.grad.abs().max() > 1e-6
    assert grown.transformer_blocks[0].attn1.to_q.weight.grad.abs().max() > 1e-6
    with torch.no_grad():  # one SGD step moves the zeroed outputs; then q/k/v receive gradient
        for p in grown.parameters():
            p -= 0.1 * p.grad
    step()
    for b in new:
        for lin in (b.attn1.to_q, b.attn2.to_k, b.ff.conv_inverted):
            assert lin.weight.grad.abs().max() > 1e-8


def test_check_depth_catches_the_reload_trap(tmp_path):
    m = smoke_model()
    del m.transformer_blocks[1]  # surgery without register_to_config
    with pytest.raises(ValueError, match="num_layers"):
        check_depth(m)
    with pytest.raises(ValueError, match="num_layers"):
        save_model(m, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
