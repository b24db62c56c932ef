"""Training loop (sana_core.train): config validation, data order, schedule/metrics, FLOPs, checkpoints, resume after
SIGKILL, atomic writes, NaN guard, EMA, caption dropout and 2-process DDP equivalence.

This file doubles as the worker script for the subprocess tests: ``python tests/test_train.py <mode> <out_dir>``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sana_core import train as T  # noqa: E402
from sana_core.flops import forward_flops_per_sample  # noqa: E402

# 8 steps, checkpoints every 2, warmup, caption dropout and EMA on: everything that has state is exercised.
RESUME_CFG = dict(steps=8, batch_size=4, lr=1e-3, warmup_steps=2, caption_dropout=0.25, checkpoint_every=2, seed=3,
                  ema=0.9, log_every=1, num_threads=1, progress=False)
DDP_CFG = dict(steps=3, batch_size=4, lr=1e-3, caption_dropout=0.5, grad_clip=0.1, seed=5, log_every=1,
               progress=False, num_threads=1)


def make_model():
    from sana_core.model import build_transformer

    return build_transformer("smoke", seed=0, in_channels=4, out_channels=4, caption_channels=32)


def make_data(n=10, length=6):
    g = torch.Generator().manual_seed(11)
    lat = torch.randn(n, 4, 8, 8, generator=g)
    emb = torch.randn(n, length, 32, generator=g)
    mask = (torch.arange(length)[None] < torch.randint(2, length + 1, (n, 1), generator=g)).long()
    return T.TensorData(lat, emb, mask, torch.randn(1, length, 32, generator=g))


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "diffusion_pytorch_model.safetensors"))


def _assert_same(a, b):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"tensors differ: {diff[:5]}"


def _worker(mode: str, out: str) -> None:
    if mode == "kill":  # slow down after the first checkpoint so the parent's SIGKILL lands mid-run
        def slow(step, m):
            if step >= 3:
                time.sleep(0.5)

        T.train(make_model(), make_data(), RESUME_CFG, out, callback=slow, resume=False)
    elif mode == "ddp":
        T.train(make_model(), make_data(), DDP_CFG, out, resume=False)
    else:
        raise SystemExit(f"unknown worker mode {mode}")


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted run with RESUME_CFG (in-process) + its callback log."""
    out = tmp_path_factory.mktemp("ref")
    log = []
    summary = T.train(make_model(), make_data(), RESUME_CFG, out, callback=lambda s, m: log.append((s, m)),
                      resume=False)
    return out, summary, log


# ---------------------------------------------------------------------------------------------------- tests
def test_config_validation_names_keys():
    cfg = T.validate_config({"steps": 5, "lr": 1})
    assert cfg["lr"] == 1.0 and isinstance(cfg["lr"], float) and cfg["shift"] == 3.0 and cfg["grad_clip"] == 0.1
    with pytest.raises(ValueError, match="learning_rate"):
        T.validate_config({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="'steps'"):
        T.validate_config({"steps": "10"})
    with pytest.raises(ValueError, match="'batch_size'"):
        T.validate_config({"batch_size": True})
    with pytest.raises(ValueError, match="'lr'"):
        T.validate_config({"lr": "1e-3"})
    with pytest.raises(ValueError, match="caption_dropout"):
        T.validate_config({"caption_dropout": 1.5})
    with pytest.raises(ValueError, match="optimizer"):
        T.validate_config({"optimizer": "sgd"})
    with pytest.raises(ValueError, match="'seed'"):
        T.validate_config({"seed": None})
    assert T.validate_config({"ema": None, "grad_clip": None})["ema"] is None


@pytest.mark.parametrize("name", ["adamw", "came", "came8bit"])
def test_optimizer_args_are_passed_through_and_checked_before_compute(name, tmp_path, monkeypatch):
    args = {"adamw": {"betas": [0.8, 0.95], "eps": 1e-6},
            "came": {"betas": [0.8, 0.95, 0.99], "eps": [1e-29, 1e-15], "clip_threshold": 0.5},
            "came8bit": {"betas": [0.8, 0.95, 0.99], "block_size": 256, "min_8bit_size": 500,
                         "quantizer": "official"}}[name]
    assert T.validate_config({})["optimizer_args"] == {}
    built = []
    real = T.build_optimizer
    monkeypatch.setattr(T, "build_optimizer", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    cfg = dict(steps=2, batch_size=4, optimizer=name, optimizer_args=args, lr=1e-3, weight_decay=0.01,
               progress=False, num_threads=1)
    T.train(make_model(), make_data(), cfg, tmp_path / "ok", resume=False)
    group = built[-1].param_groups[0]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.01
    for k, v in args.items():
        assert (tuple(group[k]) if isinstance(v, list) else group[k]) == (tuple(v) if isinstance(v, list) else v), k
    if name == "came8bit":  # 1024-element smoke weights > min_8bit_size=500 are 8-bit
        assert any("exp_avg_codes" in s for s in built[-1].state.values())
    # unknown names and bad values name train.optimizer_args.<key>, before any output is written
    for bad, key in [({"amsgrad_typo": True}, "amsgrad_typo"), ({"lr": 1e-3}, "lr"),
                     ({"betas": [0.9, 0.999, 0.9, 0.9]}, "betas")]:
        with pytest.raises(ValueError, match=rf"train\.optimizer_args\.{key}"):
            T.train(make_model(), make_data(), {**cfg, "optimizer_args": bad}, tmp_path / "bad")
    with pytest.raises(ValueError, match=r"train\.optimizer_args\.min_8bit_size"):  # came8bit-only option
        T.validate_config({"optimizer": "came", "optimizer_args": {"min_8bit_size": 10}})
    with pytest.raises(ValueError, match="'optimizer_args'"):
        T.validate_config({"optimizer_args": [0.9]})
    assert not (tmp_path / "bad").exists()


def test_bad_data_fails_before_compute(tmp_path):
    d = make_data()
    with pytest.raises(ValueError, match="null embedding"):
        T.train(make_model(), T.TensorData(d.latents, d.emb, d.mask), {"caption_dropout": 0.1}, tmp_path)
    with pytest.raises(ValueError, match="in_channels"):
        T.train(make_model(), T.TensorData(d.latents[:, :3], d.emb, d.mask, d.null_emb), {}, tmp_path)
    with pytest.raises(ValueError, match="mask"):
        T.TensorData(d.latents, d.emb, d.mask[:, :3])
    assert not any(tmp_path.iterdir())


def test_sampler_is_seeded_epoch_permutation():
    d = make_data(n=10)
    a = torch.cat([d.indices(0, s, 4) for s in range(5)])  # 20 samples = 2 epochs; batch 2 straddles them
    assert torch.equal(a, torch.cat([d.indices(0, s, 4) for s in range(5)]))
    assert sorted(a[:10].tolist()) == list(range(10)) and sorted(a[10:].tolist()) == list(range(10))
    assert not torch.equal(a[:10], a[10:])
    assert not torch.equal(a, torch.cat([d.indices(1, s, 4) for s in range(5)]))
    # caption_index indirection (deduplicated captions as in sana_core.cache)
    dd = T.TensorData(d.latents, d.emb[:3], d.mask[:3], d.null_emb, torch.arange(10) % 3)
    lat, emb, mask = dd.batch(torch.tensor([4, 5]))
    assert torch.equal(emb, d.emb[[1, 2]]) and torch.equal(lat, d.latents[[4, 5]])


def test_flops_match_hand_count():
    m = make_model()
    c = m.config
    for hw, L in [((8, 8), 6), ((4, 6), 3)]:
        t = hw[0] * hw[1]
        D, h, d = c.num_attention_heads * c.attention_head_dim, c.num_attention_heads, c.attention_head_dim
        Dx, F = c.num_cross_attention_heads * c.cross_attention_head_dim, int(c.mlp_ratio * D)
        hand = 2 * t * 4 * D + 2 * (256 * D + D * D + 6 * D * D) + 2 * L * (32 * D + D * D) + 2 * t * D * 4
        blk = 8 * t * D * D + 4 * h * (d + 1) * d * t  # q,k,v,out + linear attention (v padded with ones)
        blk += 4 * t * D * Dx + 4 * L * c.cross_attention_dim * Dx + 4 * t * L * Dx  # cross-attn incl. SDPA
        blk += 4 * t * D * F + 36 * t * F + 2 * t * F * D  # GLUMBConv: 1x1 D->2F, 3x3 depthwise on 2F, 1x1 F->D
        assert forward_flops_per_sample(m, (4, *hw), L) == hand + c.num_layers * blk


def test_metrics_schedule_flops_and_outputs(reference):
    out, summary, log = reference
    assert [s for s, _ in log] == list(range(1, 9))
    lr = RESUME_CFG["lr"]
    # diffusers constant_with_warmup (as SANA): step n (0-based) runs at lr * min(1, n / warmup)
    assert [m["lr"] for _, m in log] == pytest.approx([0.0, lr / 2] + [lr] * 6)
    assert all(m["samples_per_s"] > 0 and m["grad_norm"] > 0 and math.isfinite(m["loss"]) for _, m in log)
    fwd = forward_flops_per_sample(make_model(), (4, 8, 8), 6)
    assert summary["samples"] == 32 and summary["steps"] == 8
    assert summary["flops"] == pytest.approx(3 * fwd * 32) and summary["loss"] == log[-1][1]["loss"]
    assert json.loads((out / "final" / "train_summary.json").read_text())["flops"] == summary["flops"]
    assert [s for s, _ in T.list_checkpoints(out)] == [2, 4, 6, 8]
    st = torch.load(out / "checkpoints" / "step_4" / "state.pt", weights_only=True)
    assert st["step"] == 4 and st["samples"] == 16 and st["data_position"] == 16 and st["num_threads"] == 1
    assert st["flops"] == pytest.approx(3 * fwd * 16) and st["rng"]["torch"].dtype == torch.uint8
    assert {"optimizer", "scheduler", "config"} <= set(st)
    _assert_same(_weights(out / "final"), _weights(out / "checkpoints" / "step_8"))
    from diffusers import SanaTransformer2DModel

    m = SanaTransformer2DModel.from_pretrained(out / "checkpoints" / "step_8" / "ema")
    assert m.config.num_layers == 2


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decaying_lr_schedules_reach_zero_at_the_last_step(schedule, tmp_path):
    """lr_schedule: after the warm-up the lr decays to 0 at `steps` (hand formula of diffusers' schedules)."""
    log = []
    cfg = dict(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, lr_schedule=schedule, log_every=1, progress=False,
               num_threads=1)
    T.train(make_model(), make_data(), cfg, tmp_path / schedule, resume=False, callback=lambda s, m: log.append(m))
    frac = [(n - 2) / 4 for n in range(2, 6)]  # progress after the warm-up at steps n = 2..5 (0-based)
    decay = [0.5 * (1 + math.cos(math.pi * f)) for f in frac] if schedule == "cosine" else [1 - f for f in frac]
    assert [m["lr"] for m in log] == pytest.approx([0.0, 5e-4] + [1e-3 * d for d in decay])
    with pytest.raises(ValueError, match="lr_schedule"):
        T.validate_config({"lr_schedule": "step"})


def test_ema_is_exponential_average(tmp_path):
    cfg = dict(steps=3, batch_size=4, lr=1e-3, ema=0.8, checkpoint_every=1, caption_dropout=0.0, progress=False,
               num_threads=1)
    m0 = {k: v.clone() for k, v in make_model().state_dict().items()}
    T.train(make_model(), make_data(), cfg, tmp_path, resume=False)
    w = [m0] + [_weights(tmp_path / "checkpoints" / f"step_{s}") for s in (1, 2, 3)]
    ema = _weights(tmp_path / "final" / "ema")
    k = "transformer_blocks.0.attn1.to_q.weight"
    expect = w[0][k]
    for s in (1, 2, 3):
        expect = 0.8 * expect + 0.2 * w[s][k]
    torch.testing.assert_close(ema[k], expect, rtol=0, atol=1e-7)


def test_learns_fixed_batch(tmp_path):
    # 1 image: the flow loss at fixed (sigma, noise) draws must drop substantially after 60 steps
    d = make_data(n=1)
    m = make_model()
    g = torch.Generator().manual_seed(0)
    sig = torch.rand(16, generator=g) * 0.9 + 0.05
    noise = torch.randn(16, 4, 8, 8, generator=g)
    from sana_core import flow

    def eval_loss(model):
        x0 = d.latents.expand(16, -1, -1, -1)
        xt, t, tgt, emb = flow.flow_training_inputs(x0, d.emb.expand(16, -1, -1), sig, noise)
        with torch.no_grad():
            pred = model(xt, encoder_hidden_states=emb, encoder_attention_mask=d.mask.expand(16, -1), timestep=t,
                         return_dict=False)[0]
        return flow.flow_loss(pred, tgt).item()

    before = eval_loss(m)
    s = T.train(m, d, dict(steps=60, batch_size=8, lr=3e-3, caption_dropout=0.0, grad_clip=1.0, progress=False,
                           num_threads=1), tmp_path, resume=False)
    after = eval_loss(m)
    assert after < 0.6 * before, (before, after, s["loss"])


def test_caption_dropout_uses_null_embedding_and_prompt_mask(tmp_path):
    d = make_data()
    seen = []

    def grab(mod, args, kwargs):
        if mod.training:
            seen.append((kwargs["encoder_hidden_states"].clone(), kwargs["encoder_attention_mask"].clone()))

    m = make_model()
    m.register_forward_pre_hook(grab, with_kwargs=True)
    T.train(m, d, dict(steps=2, batch_size=4, caption_dropout=1.0, progress=False, num_threads=1), tmp_path,
            resume=False)
    for step, (emb, mask) in enumerate(seen):
        idx = d.indices(0, step, 4)
        assert torch.equal(emb, d.null_emb.expand(4, -1, -1)) and torch.equal(mask, d.mask[idx])


def test_nan_guard_stops_without_final(tmp_path):
    m = make_model()
    calls = []

    def poison(mod, args, out):
        if mod.training:
            calls.append(1)
            if len(calls) == 3:
                return out * float("nan")

    m.proj_out.register_forward_hook(poison)
    with pytest.raises(T.NonFiniteLossError, match="step 3") as ei:
        T.train(m, make_data(), dict(steps=5, batch_size=4, checkpoint_every=2, progress=False, num_threads=1),
                tmp_path, resume=False)
    assert ei.value.step == 3 and math.isnan(ei.value.loss)
    assert not (tmp_path / "final").exists() and [s for s, _ in T.list_checkpoints(tmp_path)] == [2]
    with pytest.raises(T.NonFiniteLossError):  # divergence by a huge lr
        T.train(make_model(), make_data(), dict(steps=5, batch_size=4, lr=1e30, grad_clip=None, progress=False,
                                                num_threads=1), tmp_path / "lr", resume=False)
    assert not (tmp_path / "lr" / "final").exists()


def test_crash_mid_checkpoint_write_keeps_last_good_and_resumes_exactly(reference, tmp_path, monkeypatch):
    ref_out = reference[0]
    real_save, n = torch.save, []

    def flaky_save(obj, f, *a, **k):
        n.append(f)
        if len(n) == 2:  # second checkpoint (step 4): model already written into the temp dir, then "crash"
            raise KeyboardInterrupt("simulated crash mid-write")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        T.train(make_model(), make_data(), RESUME_CFG, tmp_path, resume=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert [s for s, _ in T.list_checkpoints(tmp_path)] == [2]
    assert not (tmp_path / "checkpoints" / "step_4").exists()
    assert not list((tmp_path / "checkpoints").glob(".tmp-step_4-*"))  # atomic_dir removed its half-written temp dir
    # a SIGKILL mid-write leaves the temp dir behind (atomic_dir gets no chance to clean up): ignored, then removed
    (tmp_path / "checkpoints" / ".tmp-step_4-killed").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step_4-killed" / "state.pt").write_bytes(b"half")
    assert [s for s, _ in T.list_checkpoints(tmp_path)] == [2]
    with pytest.raises(ValueError, match="lr"):  # changed config is refused, nothing deleted
        T.train(make_model(), make_data(), dict(RESUME_CFG, lr=2e-3), tmp_path)
    with pytest.raises(ValueError, match="'steps'=1 is below"):
        T.train(make_model(), make_data(), dict(RESUME_CFG, steps=1), tmp_path)
    # num_threads=None resumes with the checkpoint's thread count (1), which bit-exactness needs on CPU
    s = T.train(make_model(), make_data(), dict(RESUME_CFG, num_threads=None), tmp_path)
    assert s["resumed_from"] == 2 and s["samples"] == 32
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    _assert_same(_weights(tmp_path / "final"), _weights(ref_out / "final"))
    _assert_same(_weights(tmp_path / "final" / "ema"), _weights(ref_out / "final" / "ema"))
    assert s["flops"] == reference[1]["flops"] and s["loss"] == reference[1]["loss"]


def test_resume_after_sigkill_is_bit_exact(reference, tmp_path):
    ref_out = reference[0]
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, __file__, "kill", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoints" / "step_2" / "state.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "worker wrote no checkpoint in 60 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert not (out / "final").exists()
    done = [s for s, _ in T.list_checkpoints(out)]
    assert done and done[-1] < RESUME_CFG["steps"]
    s = T.train(make_model(), make_data(), RESUME_CFG, out)
    assert s["resumed_from"] == done[-1] and s["steps"] == 8
    _assert_same(_weights(out / "final"), _weights(ref_out / "final"))
    _assert_same(_weights(out / "final" / "ema"), _weights(ref_out / "final" / "ema"))


def test_ddp_two_processes_match_single_process(tmp_path):
    # torchrun (accelerate's `launch --cpu` runs a single process without MPI); Accelerator picks up the env
    out2 = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        __file__, "ddp", str(out2)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    s1 = T.train(make_model(), make_data(), DDP_CFG, tmp_path / "single", resume=False)
    s2 = json.loads((out2 / "final" / "train_summary.json").read_text())
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert s2["samples"] == s1["samples"] == 12 and s2["flops"] == pytest.approx(s1["flops"])
    assert s2["loss"] == pytest.approx(s1["loss"], rel=1e-5)
    w1, w2, w0 = _weights(tmp_path / "single" / "final"), _weights(out2 / "final"), make_model().state_dict()
    moved = max((w1[k] - w0[k]).abs().max().item() for k in w1)
    assert moved > 1e-3  # training changed the weights far beyond the tolerance below
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=k)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])


def test_stage_training_with_ema_keeps_the_ema_weights(tmp_path):
    """train.ema set → the stage's model (what save_model_dir writes) holds the EMA weights, not the raw ones."""
    from flows.params import load_profile
    from flows.stages._common import WORK, run_training
    params = load_profile("smoke")
    params["train"] = {**params["train"], "ema": 0.5, "checkpoint_every": 0, "progress": False}
    params["pretrain_base"] = {**params["pretrain_base"], "steps": 3, "batch_size": 4, "optimizer": "adamw", "lr": 1e-2}
    torch.manual_seed(0)
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m, trained = run_training(model, make_data(), params, "pretrain_base", tmp_path)
    assert trained is model                                   # one process: trained in place
    final = tmp_path / WORK / "pretrain_base" / T.FINAL_DIR
    raw, ema = _weights(final), _weights(final / "ema")
    got = model.state_dict()
    assert m["weights"] == "ema 0.5" and m["steps"] == 3
    assert all(torch.equal(got[k], ema[k]) for k in ema)
    moved = [k for k in raw if not torch.equal(raw[k], before[k])]
    assert moved and any(not torch.equal(raw[k], ema[k]) for k in moved)
