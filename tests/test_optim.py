"""CAME / CAME8bit (sana_core.optim): reference equivalence, 8-bit tracking, edge cases, checkpoints, DDP, bytes."""
from __future__ import annotations

import io
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sana_core.optim import (CAME, CAME8bit, OPTIMIZERS, build_optimizer, official_dequantize, official_quantize,
                             predicted_state_bytes, state_bytes)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]




def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _grads(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) + 0.3 for s in shapes]


# --------------------------------------------------------------------------------------------- reference equivalence
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_came_matches_came_pytorch_on_2d(wd):
    from came_pytorch import CAME as RefCAME

    shapes = [(64, 48), (33, 17), (150, 120), (1, 40), (7,)]
    a, b = _params(shapes), _params(shapes)
    oa, ob = CAME(a, lr=1e-2, weight_decay=wd), RefCAME(b, lr=1e-2, weight_decay=wd)
    for t in range(15):
        gs = _grads(shapes, t)
        gs[0][3] = 0  # a zero row and a zero column
        gs[0][:, 5] = 0
        for x, y, gr in zip(a, b, gs):
            x.grad, y.grad = gr.clone(), gr.clone()
        oa.step(), ob.step()
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=0, atol=2e-5), (x.shape, (x - y).abs().max())
        assert torch.allclose(oa.state[x]["exp_avg"], ob.state[y]["exp_avg"], rtol=1e-4, atol=1e-6)


def test_1x1_conv_is_factored_as_out_by_in_like_came_pytorch_on_the_reshaped_weight():
    from came_pytorch import CAME as RefCAME

    conv = _params([(40, 24, 1, 1)])
    flat = [torch.nn.Parameter(conv[0].detach().reshape(40, 24).clone())]
    raw = [torch.nn.Parameter(conv[0].detach().clone())]
    ours, ref, ref4d = CAME(conv, lr=1e-2), RefCAME(flat, lr=1e-2), RefCAME(raw, lr=1e-2)
    for t in range(15):
        gr = _grads([(40, 24, 1, 1)], t)[0]
        conv[0].grad, flat[0].grad, raw[0].grad = gr.clone(), gr.reshape(40, 24).clone(), gr.clone()
        ours.step(), ref.step(), ref4d.step()
    assert torch.allclose(conv[0].reshape(40, 24), flat[0], rtol=0, atol=1e-5)
    assert ours.state[conv[0]]["exp_avg_sq_row"].shape == (40,)
    # came-pytorch factors the 4-D kernel over its trailing (1, 1) dims: full-size "row" statistics, other numbers
    assert ref4d.state[raw[0]]["exp_avg_sq_row"].shape == (40, 24, 1)
    assert not torch.allclose(raw[0], conv[0], atol=1e-3)


# --------------------------------------------------------------------------------------------- 8-bit tracks 32-bit
def _mlp_losses(name, steps=80, seed=0, **kw):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 256), torch.nn.GELU(),
                                torch.nn.Linear(256, 16))
    g = torch.Generator().manual_seed(1)
    W = torch.randn(32, 16, generator=g) / 4
    opt = build_optimizer(name, model.parameters(), lr=3e-4, **kw)
    losses = []
    for _ in range(steps):
        x = torch.randn(64, 32, generator=g)
        y = torch.tanh(x @ W) + 0.1 * torch.sin(3 * x[:, :16])
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, opt


@pytest.mark.parametrize("quantizer", ["bnb", "official"])
def test_came8bit_tracks_came(quantizer):
    ref, _ = _mlp_losses("came")
    q, opt = _mlp_losses("came8bit", quantizer=quantizer)
    assert ref[-1] < 0.35 * ref[0]  # it actually trains
    tail_ref, tail_q = sum(ref[-20:]) / 20, sum(q[-20:]) / 20
    # measured (seeds 0-2, mean of the last 20 of 80 losses): bnb 0.007-0.018 %, official 0.004-0.016 %; asserted 0.1 %
    assert abs(tail_q - tail_ref) / tail_ref < 1e-3, (tail_ref, tail_q)
    eightbit = [s for s in opt.state.values() if "exp_avg_codes" in s]
    assert len(eightbit) == 1 and eightbit[0]["exp_avg_codes"].dtype == torch.uint8  # only the 256×256 weight


# --------------------------------------------------------------------------------------------- quantisers
def _nvlabs_quantize(x, block_size=2048):  # NVlabs CAME8BitWrapper._quantize_state, verbatim logic
    out = []
    for chunk in x.split(block_size):
        mn, mx = chunk.min(), chunk.max()
        scale = (mx - mn) / 255
        out.append({"data": ((chunk - mn) / scale).round().byte(), "scale": scale, "min": mn})
    return out


def test_official_quantizer_bit_identical_to_nvlabs_and_zero_chunks_give_no_nan():
    x = torch.randn(5000, 24) * 0.01
    q, mn, scale = official_quantize(x, 2048)
    ref = _nvlabs_quantize(x, 2048)
    assert q.dtype == torch.uint8 and mn.shape == scale.shape == (3,)
    assert torch.equal(q, torch.cat([c["data"] for c in ref]))
    assert torch.equal(mn, torch.stack([c["min"] for c in ref])) and torch.equal(scale, torch.stack([c["scale"] for c in ref]))
    deq = official_dequantize(q, mn, scale, 2048)
    assert torch.equal(deq, torch.cat([c["data"].float() * c["scale"] + c["min"] for c in ref]))
    assert (deq - x).abs().max() <= scale.max() / 2 * 1.001
    x[2048:4096] = 0  # an all-zero chunk: official code divides 0/0
    q, mn, scale = official_quantize(x, 2048)
    deq = official_dequantize(q, mn, scale, 2048)
    assert torch.isfinite(deq).all() and torch.equal(deq[2048:4096], torch.zeros(2048, 24)) and scale[1] == 0


def test_bnb_state_is_bitsandbytes_blockwise_quantisation():
    import bitsandbytes.functional as bnbF

    ps = _params([(300, 100)])
    opt = CAME8bit(ps, lr=1e-2, block_size=256)
    for t in range(3):
        ps[0].grad = _grads([(300, 100)], t)[0]
        opt.step()
    st = opt.state[ps[0]]
    m = opt._load_m(st, opt.param_groups[0])
    ref = bnbF.dequantize_blockwise(st["exp_avg_codes"], absmax=st["exp_avg_absmax"], blocksize=256)
    assert st["exp_avg_absmax"].shape == (118,) and torch.equal(m, ref)
    x = torch.randn(300, 100) * 1e-3  # the in-place store writes exactly bnb's codes and absmax
    st2 = {"exp_avg_codes": torch.zeros(300, 100, dtype=torch.uint8), "exp_avg_absmax": torch.zeros(118)}
    opt._store_m(st2, x, opt.param_groups[0])
    codes, qs = bnbF.quantize_blockwise(x, blocksize=256)
    assert torch.equal(codes, st2["exp_avg_codes"]) and torch.equal(qs.absmax, st2["exp_avg_absmax"])
    buf = torch.empty(300, 100)
    assert torch.equal(opt._load_m(st, opt.param_groups[0], out=buf), ref)


@pytest.mark.parametrize("quantizer", ["bnb", "official"])
def test_zero_gradients_and_zero_blocks_give_no_nan(quantizer):
    ps = _params([(300, 100), (20,)])
    before = [p.detach().clone() for p in ps]
    opt = CAME8bit(ps, lr=1e-2, quantizer=quantizer, block_size=64 if quantizer == "official" else 2048)
    for _ in range(3):  # all-zero gradients: nothing moves, nothing is NaN
        for p in ps:
            p.grad = torch.zeros_like(p)
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))
    for t in range(3):  # gradients zero on whole quantisation blocks (rows 0..99 = 10000 flattened elements)
        g = _grads([(300, 100)], t)[0]
        g[:100] = 0
        ps[0].grad, ps[1].grad = g, torch.zeros(20)
        opt.step()
    st = opt.state[ps[0]]
    assert st["exp_avg_codes"].dtype == torch.uint8
    assert all(torch.isfinite(v).all() for v in st.values() if torch.is_tensor(v) and v.is_floating_point())
    # rows 0..63 lie in all-zero quantisation blocks in both modes (bnb: 8192 flat elements; official: 64 rows)
    assert torch.isfinite(ps[0]).all() and torch.equal(ps[0][:64], before[0][:64])
    m = opt._load_m(st, opt.param_groups[0])
    assert torch.equal(m[:64], torch.zeros(64, 100))  # all-zero blocks dequantise to exactly 0
    assert not torch.equal(ps[0][100:], before[0][100:])


# --------------------------------------------------------------------------------------------- edge cases
def test_small_tensors_stay_fp32_and_params_without_grad_are_skipped():
    ps = _params([(128, 128), (129, 128), (640, 128, 1, 1), (16, 1, 3, 3), (300,), (50, 50)])
    opt = CAME8bit(ps, lr=1e-3)
    for p, g in zip(ps, _grads([p.shape for p in ps], 0)):
        p.grad = g
    ps[-1].grad = None
    opt.step()
    kinds = [("codes" if "exp_avg_codes" in opt.state[p] else opt.state[p]["exp_avg"].dtype) for p in ps[:-1]]
    assert kinds == [torch.float32, "codes", "codes", torch.float32, torch.float32]  # 128·128 = 16384 is not > 16384
    assert "exp_avg_sq" in opt.state[ps[3]] and "exp_avg_sq_row" not in opt.state[ps[3]]  # depthwise 3×3 full
    assert ps[-1] not in opt.state


def test_weight_decay_is_decoupled_and_add_param_group_mid_run():
    ps = _params([(64, 32), (32,)])
    opt = CAME(ps, lr=0.1, weight_decay=0.5)
    before = [p.detach().clone() for p in ps]
    for p in ps:
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradient ⇒ update 0 ⇒ p ← p − lr·wd·p exactly
    for p, b in zip(ps, before):
        assert torch.equal(p, b.clone().add_(b, alpha=-0.1 * 0.5))
    opt.param_groups[0]["weight_decay"] = 0.0
    snap = [p.detach().clone() for p in ps]
    opt.step()
    assert all(torch.equal(p, s) for p, s in zip(ps, snap))
    new = _params([(48, 48)], seed=3)[0]
    opt.add_param_group({"params": [new], "lr": 1e-2})
    for t in range(3):
        for p, g in zip(ps + [new], _grads([(64, 32), (32,), (48, 48)], t)):
            p.grad = g
        opt.step()
    assert opt.state[new]["step"] == 3 and opt.state[ps[0]]["step"] == 5
    # the new group follows its own lr and inherits the constructor's weight decay: same as a fresh CAME
    assert opt.param_groups[1]["weight_decay"] == 0.5
    ref = _params([(48, 48)], seed=3)[0]
    solo = CAME([ref], lr=1e-2, weight_decay=0.5)
    for t in range(3):
        ref.grad = _grads([(64, 32), (32,), (48, 48)], t)[2]
        solo.step()
    assert torch.equal(ref, new)


def test_stacked_same_shape_tensors_equal_one_by_one():
    shapes = [(64, 64)] * 3 + [(700, 400)]
    a = _params(shapes)
    opt = CAME(a, lr=1e-2, weight_decay=0.1)
    b = _params(shapes)
    singles = [CAME([p], lr=1e-2, weight_decay=0.1) for p in b]
    for t in range(4):
        for x, y, g in zip(a, b, _grads(shapes, t)):
            x.grad, y.grad = g.clone(), g.clone()
        opt.step()
        for o in singles:
            o.step()
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=0, atol=1e-6)


def test_bad_arguments_raise_named_errors():
    p = _params([(4, 4)])
    with pytest.raises(ValueError, match=r"optimizer\.name.*adamw.*came8bit"):
        build_optimizer("lion", p, lr=1e-3)
    with pytest.raises(ValueError, match=r"optimizer\.block_size"):
        build_optimizer("came8bit", p, lr=1e-3, block_size=1000)
    with pytest.raises(ValueError, match=r"optimizer\.quantizer"):
        build_optimizer("came8bit", p, lr=1e-3, quantizer="nf4")
    with pytest.raises(ValueError, match=r"optimizer\.min_8bit_size"):
        build_optimizer("came", p, lr=1e-3, min_8bit_size=1)
    with pytest.raises(ValueError, match=r"optimizer\.betas"):
        build_optimizer("came", p, lr=1e-3, betas=(0.9, 0.999))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_build_optimizer_trains_with_param_groups(name):
    losses, opt = _mlp_losses(name, steps=40, seed=1)
    assert losses[-1] < 0.8 * losses[0], losses[::10]
    assert isinstance(opt, torch.optim.Optimizer)
    torch.manual_seed(0)
    m = torch.nn.Linear(8, 4)
    opt = build_optimizer(name, [{"params": [m.weight]}, {"params": [m.bias], "lr": 0.0 if "adam" in name else 1e-9}],
                          lr=1e-2)
    m(torch.randn(5, 8)).square().mean().backward()
    b0 = m.bias.detach().clone()
    opt.step()
    assert opt.param_groups[1]["lr"] != opt.param_groups[0]["lr"]
    assert (m.bias - b0).abs().max() < 1e-6


# --------------------------------------------------------------------------------------------- checkpoints
def _plain(obj):
    if torch.is_tensor(obj) or obj is None or isinstance(obj, (bool, int, float, str)):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_plain(o) for o in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, (int, str)) and _plain(v) for k, v in obj.items())
    return False


@pytest.mark.parametrize("kw", [dict(name="came"), dict(name="came8bit"), dict(name="came8bit", quantizer="official")])
def test_state_dict_round_trip_and_bit_identical_resume(kw):
    kw = dict(kw)
    name = kw.pop("name")

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(24, 200), torch.nn.SiLU(), torch.nn.Linear(200, 120),
                                    torch.nn.SiLU(), torch.nn.Linear(120, 6))
        return model, build_optimizer(name, model.parameters(), lr=1e-3, weight_decay=0.01, **kw)

    g = torch.Generator().manual_seed(5)
    data = [(torch.randn(32, 24, generator=g), torch.randn(32, 6, generator=g)) for _ in range(10)]

    def train(model, opt, batches):
        for x, y in batches:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    full_m, full_o = make()
    train(full_m, full_o, data)
    m1, o1 = make()
    train(m1, o1, data[:5])
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "optimizer": o1.state_dict()}, buf)
    sd = o1.state_dict()
    assert _plain(sd)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    m2, o2 = make()
    m2.load_state_dict(ck["model"])
    o2.load_state_dict(ck["optimizer"])
    sd2 = o2.state_dict()
    for pid, st in sd["state"].items():  # exact round trip: same keys, dtypes, values
        assert st.keys() == sd2["state"][pid].keys()
        for k, v in st.items():
            if torch.is_tensor(v):
                assert v.dtype == sd2["state"][pid][k].dtype and torch.equal(v, sd2["state"][pid][k]), k
            else:
                assert v == sd2["state"][pid][k]
    if name == "came8bit":
        codes = [v for st in sd2["state"].values() for k, v in st.items() if k == "exp_avg_codes"]
        assert len(codes) == 1 and codes[0].dtype == torch.uint8  # 200·120 only; 24·200 = 4800 stays fp32
    train(m2, o2, data[5:])
    for a, b in zip(full_m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------- bytes
def test_state_bytes_predicted_equals_measured_and_8bit_is_uint8():
    from sana_core.model import PROFILES
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(0)
    model = SanaTransformer2DModel(**dict(PROFILES["smoke"], num_attention_heads=4, attention_head_dim=32,
                                          num_cross_attention_heads=4, cross_attention_head_dim=32,
                                          cross_attention_dim=128))
    shapes = [p.shape for p in model.parameters()]
    got = {}
    for name in OPTIMIZERS:
        opt = build_optimizer(name, model.parameters(), lr=1e-5)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opt.step()
        got[name] = state_bytes(opt)
        assert got[name] == predicted_state_bytes(name, shapes), name
        if name == "came8bit":
            n8 = sum(s["exp_avg_codes"].numel() for s in opt.state.values() if "exp_avg_codes" in s)
            assert n8 > 0 and all(s["exp_avg_codes"].dtype == torch.uint8 for s in opt.state.values()
                                  if "exp_avg_codes" in s)
    nparam = sum(math.prod(s) for s in shapes)
    assert got["adamw"] > 8 * nparam and got["came8bit"] < got["came"] < got["adamw"]
    assert predicted_state_bytes("came8bit", [(2240, 2240)]) == 2240 * 2240 + 4 * 2450 + 8 * 4480
    assert predicted_state_bytes("came8bit", [(2240, 2240)], quantizer="official") == 2240 * 2240 + 8 * 2 + 8 * 4480


# --------------------------------------------------------------------------------------------- DDP (2 CPU ranks, gloo)
_DDP_SCRIPT = textwrap.dedent('''
    import os, sys, torch
    from sana_core.optim import build_optimizer

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.GELU(), torch.nn.Linear(256, 128),
                                   torch.nn.GELU(), torch.nn.Linear(128, 8))

    def run(name, rank, world, steps=8, batch=32):
        model = make()
        opt = build_optimizer(name, model.parameters(), lr=1e-3, weight_decay=0.01)
        acc = None
        if world > 1:
            from accelerate import Accelerator
            acc = Accelerator(cpu=True)
            model, opt = acc.prepare(model, opt)
        g = torch.Generator().manual_seed(1)
        X = torch.randn(steps, batch, 16, generator=g)
        Y = torch.sin(X[..., :8] * 2) + X[..., 8:] ** 2
        per = batch // world
        for t in range(steps):
            sl = slice(rank * per, (rank + 1) * per)
            loss = torch.nn.functional.mse_loss(model(X[t, sl]), Y[t, sl])
            acc.backward(loss) if acc is not None else loss.backward()
            opt.step()
            opt.zero_grad()
        m = acc.unwrap_model(model) if acc is not None else model
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    if __name__ == "__main__":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        res = {f"{n}/{k}": v for n in ("came", "came8bit") for k, v in run(n, rank, world).items()}
        torch.save(res, os.path.join(sys.argv[1], f"rank{rank}.pt"))
''')


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_ranks_step_identically_and_match_single_process(tmp_path):
    script = tmp_path / "ddp_optim.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # single-process reference on the full batch while the ranks run
    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_optim
        single = {n: ddp_optim.run(n, 0, 1) for n in ("came", "came8bit")}
        init = ddp_optim.make().state_dict()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ddp_optim", None)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)  # replicas bit-identical
    for k, v in single["came"].items():  # fp32 CAME: all-reduced grads = full-batch grads up to fp32 rounding
        assert torch.allclose(r0[f"came/{k}"], v, rtol=0, atol=1e-5), k
        assert not torch.equal(v, init[k])
    # CAME8bit: fp32-level gradient differences can flip an 8-bit code; the gap must stay far below the 8-bit error
    d_ddp = max((r0[f"came8bit/{k}"] - v).abs().max().item() for k, v in single["came8bit"].items())
    d_8bit = max((single["came"][k] - v).abs().max().item() for k, v in single["came8bit"].items())
    assert d_ddp < 0.5 * d_8bit, (d_ddp, d_8bit)


def test_bf16_params_keep_fp32_statistics_and_uint8_codes_through_load_state_dict():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.GELU(), torch.nn.Linear(300, 8)).to(torch.bfloat16)
    opt = build_optimizer("came8bit", m.parameters(), lr=1e-3)
    m(torch.randn(16, 64, dtype=torch.bfloat16)).float().square().mean().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = build_optimizer("came8bit", m.parameters(), lr=1e-3)
    opt2.load_state_dict(torch.load(buf, weights_only=True))  # torch alone would cast everything to bf16
    st = opt2.state[m[0].weight]
    assert st["exp_avg_codes"].dtype == torch.uint8 and st["exp_avg_sq_row"].dtype == torch.float32
    assert all(torch.equal(v, opt.state[m[0].weight][k]) for k, v in st.items() if torch.is_tensor(v))
    assert opt2.state[m[2].bias]["exp_avg_sq"].dtype == torch.float32
    assert m[0].weight.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------ 8-bit on the diffusion model
def _smoke_diffusion_run(name, out, monkeypatch, seed=0, lr=3e-4, **optimizer_args):
    """30 flow-matching steps (B=8) of the smoke SanaTransformer2DModel through sana_core.train on fixed synthetic
    latents (smooth fields + a caption-dependent offset) and caption embeddings; same init, batches, noise and σ per
    call. Returns (training losses, held-out loss of the final model on 128 fixed (x0, ε, σ) draws, optimizer)."""
    from sana_core import flow
    from sana_core import train as T
    from sana_core.model import build_transformer

    g = torch.Generator().manual_seed(7)
    n, L = 32, 6
    emb = torch.randn(n, L, 384, generator=g)
    lat = torch.nn.functional.interpolate(torch.randn(n, 16, 2, 2, generator=g), size=(8, 8), mode="bilinear")
    lat = lat + 0.5 * emb[:, 0, :16, None, None]
    mask = torch.ones(n, L, dtype=torch.long)
    built = []
    real = T.build_optimizer
    monkeypatch.setattr(T, "build_optimizer", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    cfg = dict(steps=30, batch_size=8, lr=lr, optimizer=name, optimizer_args=optimizer_args, seed=seed,
               log_every=1, num_threads=1, progress=False, caption_dropout=0.0)
    losses = []
    model = build_transformer("smoke", seed=seed)
    T.train(model, (lat, emb, mask), cfg, out, callback=lambda s, m: losses.append(m["loss"]), resume=False)
    sigma, noise, _ = flow.draw_flow_noise(4 * n, lat.shape[1:], generator=torch.Generator().manual_seed(99))
    x0, e = lat.repeat(4, 1, 1, 1), emb.repeat(4, 1, 1)
    with torch.no_grad():
        x_t, t, target, e = flow.flow_training_inputs(x0, e, sigma, noise)
        pred = model(x_t, encoder_hidden_states=e, encoder_attention_mask=mask.repeat(4, 1), timestep=t,
                     return_dict=False)[0]
        held_out = flow.flow_loss(pred, target).item()
    return losses, held_out, built[-1]  # built[0] may be train's dummy argument check


def test_came8bit_tracks_came_on_the_smoke_diffusion_model(tmp_path, monkeypatch):
    from sana_core.optim import uses_8bit

    ref, ev_ref, _ = _smoke_diffusion_run("came", tmp_path / "came", monkeypatch)
    q, ev_q, opt = _smoke_diffusion_run("came8bit", tmp_path / "came8bit", monkeypatch, min_8bit_size=1000)
    # min_8bit_size passed through train.optimizer_args: every Linear/1×1-conv weight > 1000 elements is 8-bit
    params = list(opt.state)
    codes = [s["exp_avg_codes"] for s in opt.state.values() if "exp_avg_codes" in s]
    assert len(codes) == sum(uses_8bit(p.shape, 1000) for p in params) == 25
    assert all(c.dtype == torch.uint8 for c in codes)
    assert sum(c.numel() for c in codes) > 0.9 * sum(p.numel() for p in params)  # 60,416 of 66,384 weights
    assert len(ref) == len(q) == 30
    assert ev_ref < 0.5 * sum(ref[:3]) / 3  # it actually trains (3.07 → 1.28 at seed 0)
    # measured, seeds 0-2 at lr 3e-4: held-out loss of the final models differs by 0.010-0.039 %, mean of the last 10
    # training losses by 0.001-0.034 %; asserted 0.5 %. (At lr 1e-3 the 30-step trajectories become chaotic and
    # differ by 0.6-3.6 % either way — came8bit lower in 2 of 3 seeds — so the test uses the stable lr.)
    assert abs(ev_q - ev_ref) / ev_ref < 5e-3, (ev_ref, ev_q)
    tail_ref, tail_q = sum(ref[-10:]) / 10, sum(q[-10:]) / 10
    assert abs(tail_q - tail_ref) / tail_ref < 5e-3, (tail_ref, tail_q)
