"""Depth pruning (sana_core/prune.py): selection order, ties, equality with manual ModuleList surgery,
save/reload depth (and the register_to_config trap), grow→importance→prune, and the compute helper."""
import copy
import json

import pytest
import torch
from diffusers import SanaTransformer2DModel

from sana_core.flops import train_flops
from sana_core.growth import grow
from sana_core.importance import block_importance
from sana_core.prune import kept_blocks, prune, scratch_steps_for_compute
from sana_core.surgery_io import save_model
from helpers import random_smoke_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")




def smoke_model(depth=6, seed=0):
    return random_smoke_model(depth, seed)


def inputs(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, m.config.in_channels, 8, 8, generator=g)
    emb = torch.randn(3, 5, m.config.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1] * 5, [1, 1, 1, 1, 0]])
    return x, emb, torch.tensor([10.0, 500.0, 990.0]), mask


def run(m, x, emb, t, mask):
    with torch.no_grad():
        return m(x, emb, t, encoder_attention_mask=mask).sample


BI = [0.5, 0.1, 0.3, 0.05, 0.4, 0.2]


def test_keeps_top_importance_blocks_in_order():
    src = smoke_model()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    pruned, kept = prune(src, BI, 3)
    assert kept == [0, 2, 4]
    assert pruned.config.num_layers == len(pruned.transformer_blocks) == 3
    for new_i, old_i in enumerate(kept):
        for p, q in zip(pruned.transformer_blocks[new_i].parameters(), src.transformer_blocks[old_i].parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    assert src.config.num_layers == 6 and all(torch.equal(v, src.state_dict()[k]) for k, v in before.items())
    assert prune(src, BI, 5)[1] == [0, 1, 2, 4, 5]
    assert prune(src, BI, 1)[1] == [0]
    # accepted importance formats: the block_importance dict and {index: score}
    assert prune(src, {"bi": BI}, 2)[1] == [0, 4]
    assert prune(src, dict(enumerate(BI)), 4)[1] == [0, 2, 4, 5]


def test_ties_drop_the_higher_index_first():
    assert kept_blocks([0.2, 0.0, 0.0, 0.0, 0.3], 3) == [0, 1, 4]
    assert kept_blocks([0.0, 0.0, 0.0, 0.0], 2) == [0, 1]
    assert kept_blocks([0.1, 0.1, 0.5, 0.1], 2) == [0, 2]


def test_equals_manual_modulelist_surgery():
    src = smoke_model()
    pruned, kept = prune(src, BI, 4)
    manual = copy.deepcopy(src)
    drop = {i for i in range(6) if i not in kept}
    manual.transformer_blocks = torch.nn.ModuleList(b for i, b in enumerate(manual.transformer_blocks) if i not in drop)
    manual.register_to_config(num_layers=len(manual.transformer_blocks))
    args = inputs(src)
    out = run(pruned, *args)
    assert (out - run(manual, *args)).abs().max().item() == 0.0
    assert (out - run(src, *args)).abs().max().item() > 1e-3  # pruning changed the function


def test_save_reload_depth_and_the_trap(tmp_path):
    src = smoke_model()
    pruned, kept = prune(src, BI, 4)
    out = save_model(pruned, tmp_path / "pruned", extra_json={"prune.json": {"kept": kept}})
    assert json.loads((out / "config.json").read_text())["num_layers"] == 4
    re = SanaTransformer2DModel.from_pretrained(out).eval()
    assert re.config.num_layers == 4 and len(re.transformer_blocks) == 4
    args = inputs(src)
    assert (run(re, *args) - run(pruned, *args)).abs().max().item() == 0.0

    # the trap prune() avoids: ModuleList surgery without register_to_config saves a stale num_layers
    naive = copy.deepcopy(src)
    naive.transformer_blocks = torch.nn.ModuleList(naive.transformer_blocks[i] for i in kept)
    naive.save_pretrained(tmp_path / "naive")
    assert json.loads((tmp_path / "naive" / "config.json").read_text())["num_layers"] == 6
    bad = SanaTransformer2DModel.from_pretrained(tmp_path / "naive").eval()  # only a warning
    assert len(bad.transformer_blocks) == 6  # blocks 4 and 5 are not from the checkpoint
    try:
        assert (run(bad, *args) - run(pruned, *args)).abs().max().item() > 1e-3
    except RuntimeError as e:  # diffusers 0.42 leaves the missing blocks on the meta device
        assert "meta" in str(e)


def test_grow_importance_prune_round_trip():
    """Identity blocks (BI = 0) are pruned first, which recovers the truncated source exactly."""
    src = smoke_model(depth=4)
    grown, layout = grow(src, 7, drop_last=1, seed=0)
    g = torch.Generator().manual_seed(0)
    calib = {"emb": torch.randn(3, 5, 384, generator=g), "mask": torch.ones(3, 5, dtype=torch.long),
             "x0": torch.randn(3, 16, 8, 8, generator=g)}
    res = block_importance(grown, calib, [1.0, 0.6, 0.2], batch_size=3)
    pruned, kept = prune(grown, res, 3)
    assert kept == [0, 1, 2] and layout[:3] == kept
    args = inputs(src)
    ref = copy.deepcopy(src)
    del ref.transformer_blocks[3]
    ref.register_to_config(num_layers=3)
    assert (run(pruned, *args) - run(ref, *args)).abs().max().item() == 0.0


@pytest.mark.parametrize("target", [6, 7, 0, -1, 2.5, True])
def test_bad_target_names_the_key(target):
    with pytest.raises(ValueError, match="prune.targets"):
        prune(smoke_model(), BI, target)


def test_bad_importance():
    m = smoke_model()
    with pytest.raises(ValueError, match="importance has 5 scores"):
        prune(m, BI[:5], 3)
    with pytest.raises(ValueError, match="NaN"):
        prune(m, BI[:5] + [float("nan")], 3)
    with pytest.raises(ValueError, match="one score per block"):
        prune(m, {0: 1.0, 1: 2.0}, 1)


def test_scratch_steps_for_compute():
    assert scratch_steps_for_compute(1000, 10, 4) == 25
    assert scratch_steps_for_compute(1039, 10, 4) == 25  # floor: never exceed the budget
    assert scratch_steps_for_compute(1040, 10, 4) == 26
    assert scratch_steps_for_compute(39, 10, 4) == 0
    # a budget accumulated in floating point just below n·f·b still gives n
    f, b = 6.08e9 / 32 * 3, 32
    budget = 1000 * f * b * (1 - 1e-13)
    assert budget < 1000 * f * b
    assert scratch_steps_for_compute(budget, f, b) == 1000
    assert scratch_steps_for_compute(budget * (1 - 1e-6), f, b) == 999
    # consistent with the training loop's accounting: train_flops(fwd, samples) = 3·fwd·samples
    fwd = 1.2345e8
    assert scratch_steps_for_compute(train_flops(fwd, 16 * 137), train_flops(fwd, 1), 16) == 137
    # exact for huge integer budgets (no float rounding up)
    assert scratch_steps_for_compute(10**18, 3, 1) == 333333333333333333
    for args, key in [((0, 1, 1), "flops_budget"), ((1, -1, 1), "flops_per_sample"), ((1, 1, 0), "batch_size"),
                      ((float("inf"), 1, 1), "flops_budget"), ((1, 1, 2.0), "batch_size")]:
        with pytest.raises(ValueError, match=key):
            scratch_steps_for_compute(*args)
