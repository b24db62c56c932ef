"""Block importance (sana_core/importance.py): hooks vs a by-hand computation, identity blocks, range,
determinism, hook cleanup, σ buckets, the sampler grid and the plot."""
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sana_core.growth import grow
from sana_core.importance import block_importance, plot_importance, sampler_sigmas, token_dissimilarity
from helpers import random_smoke_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")




def smoke_model(depth=4, seed=0):
    return random_smoke_model(depth, seed)


def calibration(m, P=5, L=6, seed=7):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(P, L, dtype=torch.long)
    for i in range(P):
        mask[i, 1 + i % (L - 1):] = 0  # varied valid lengths
    return {"emb": torch.randn(P, L, m.config.caption_channels, generator=g), "mask": mask,
            "x0": torch.randn(P, m.config.in_channels, 8, 8, generator=g)}


SIGMAS = [1.0, 0.9, 0.75, 0.5, 0.1]


def manual_bi(m, calib, sigmas, seed=0):
    """Run the model's prelude and blocks by hand and average 1 − cos per token (torch's cosine_similarity)."""
    m = m.eval()
    x0, emb, mask = calib["x0"], calib["emb"], calib["mask"]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    per_t = torch.zeros(len(m.transformer_blocks), len(sigmas), dtype=torch.float64)
    with torch.no_grad():
        for j, s in enumerate(sigmas):
            B = x0.shape[0]
            h = m.patch_embed((1 - s) * x0 + s * eps)
            t6, _ = m.time_embed(torch.full((B,), s * 1000.0), batch_size=B, hidden_dtype=h.dtype)
            enc = m.caption_norm(m.caption_projection(emb))
            bias = ((1 - mask.float()) * -10000.0).unsqueeze(1)
            for i, blk in enumerate(m.transformer_blocks):
                out = blk(h, None, enc, bias, t6, 8, 8)
                per_t[i, j] = (1 - F.cosine_similarity(h.double(), out.double(), dim=-1)).mean()
                h = out
    return per_t


def test_hooks_match_manual_computation():
    m = smoke_model()
    calib = calibration(m)
    res = block_importance(m, calib, SIGMAS, batch_size=2, seed=0)
    ref = manual_bi(m, calib, SIGMAS)
    got = torch.tensor(res["per_timestep"]["bi"], dtype=torch.float64)
    assert got.shape == (4, 5)
    assert (got - ref).abs().max() < 1e-6
    assert torch.allclose(torch.tensor(res["bi"], dtype=torch.float64), ref.mean(1), atol=1e-6)
    assert all(0.0 < b <= 2.0 for b in res["bi"])
    assert ref.min() > 1e-3  # not vacuous: blocks really change their input
    assert res["n_prompts"] == 5 and res["n_tokens"] == 64 and res["n_blocks"] == 4


def test_buckets():
    m = smoke_model()
    res = block_importance(m, calibration(m), SIGMAS, batch_size=5)
    b = res["buckets"]
    assert [x["sigmas"] for x in b] == [[0.1], [], [0.5], [1.0, 0.9, 0.75]]
    assert b[1]["bi"] is None
    per_t = torch.tensor(res["per_timestep"]["bi"])
    assert torch.allclose(torch.tensor(b[3]["bi"]), per_t[:, :3].mean(1).float(), atol=1e-7)
    assert torch.allclose(torch.tensor(b[0]["bi"]), per_t[:, 4].float(), atol=1e-7)


def test_identity_blocks_have_zero_importance():
    src = smoke_model()
    grown, layout = grow(src, 7, drop_last=1, seed=0)
    res = block_importance(grown, calibration(grown), SIGMAS, batch_size=3)
    for i, s in enumerate(layout):
        if s == "new":
            assert res["bi"][i] == 0.0
            assert all(row == 0.0 for row in res["per_timestep"]["bi"][i])
        else:
            assert res["bi"][i] > 1e-3
    assert token_dissimilarity(torch.ones(2, 3), -torch.ones(2, 3)).tolist() == [2.0, 2.0]  # the upper end


def test_deterministic_and_independent_of_batch_size():
    m = smoke_model()
    calib = calibration(m)
    a = block_importance(m, calib, SIGMAS, batch_size=2, seed=3)
    b = block_importance(m, calib, SIGMAS, batch_size=2, seed=3)
    c = block_importance(m, calib, SIGMAS, batch_size=5, seed=3)
    d = block_importance(m, calib, SIGMAS, batch_size=2, seed=4)
    assert a == b
    assert max(abs(x - y) for x, y in zip(a["bi"], c["bi"])) < 1e-6
    assert a["bi"] != d["bi"]  # the noise seed matters


def test_hooks_removed_and_mode_restored_even_on_error(monkeypatch):
    m = smoke_model().train()
    calib = calibration(m)
    block_importance(m, calib, SIGMAS[:2])
    assert m.training
    assert all(not b._forward_hooks for b in m.transformer_blocks)

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(m.transformer_blocks[2], "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        block_importance(m, calib, SIGMAS[:2])
    assert m.training
    assert all(not b._forward_hooks for b in m.transformer_blocks)


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.pop("x0"), "importance.calib.x0"),
    (lambda c: c.update(x0=c["x0"][:3]), "importance.calib.x0"),
    (lambda c: c.update(emb=c["emb"][..., :10]), "importance.calib.emb"),
    (lambda c: c.update(mask=c["mask"][:, :3]), "importance.calib.mask"),
])
def test_bad_calibration_names_the_key(mutate, key):
    m = smoke_model()
    calib = calibration(m)
    mutate(calib)
    with pytest.raises(ValueError, match=key):
        block_importance(m, calib, SIGMAS)


def test_bad_settings_name_the_key():
    m = smoke_model()
    calib = calibration(m)
    with pytest.raises(ValueError, match="importance.timesteps"):
        block_importance(m, calib, [])
    with pytest.raises(ValueError, match="importance.timesteps"):
        block_importance(m, calib, [0.5, 1.2])
    with pytest.raises(ValueError, match="importance.batch_size"):
        block_importance(m, calib, SIGMAS, batch_size=0)


def test_sampler_sigmas_match_flow_dpm_grid():
    from diffusers import DPMSolverMultistepScheduler
    s = sampler_sigmas(20, 3.0)
    assert len(s) == 20 and s[0] == 1.0 and s == sorted(s, reverse=True)
    assert abs(s[10] - 0.75) < 1e-12  # t = 0.5 → 3·0.5/(1 + 2·0.5)
    sch = DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    sch.set_timesteps(20)
    # diffusers clamps the unshifted grid's top to 1 − 1/1000: same grid up to that endpoint convention
    assert max(abs(a - b) for a, b in zip(s, sch.sigmas[:-1].tolist())) < 1e-3


def test_plot_png(tmp_path):
    m = smoke_model()
    res = block_importance(m, calibration(m), SIGMAS)
    p = plot_importance(res, tmp_path / "plots" / "bi.png")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] == 400
        px = im.convert("RGB").getcolors(maxcolors=100000)
    assert len(px) > 10  # something was drawn
    assert [q.name for q in p.parent.iterdir()] == ["bi.png"]
