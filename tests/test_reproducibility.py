"""CPU reproducibility (issue 17, docs/results.md §13): CPU gradients depend on torch's thread count, so the tiny
profile pins the thread count of both training loops (the codec's and the DiT's); each loop runs at the pinned count
whatever the process's default, restores the process's count afterwards, and records the count (and the CPU's ISA) in
its report / the stage metrics."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flows import params as P
from flows.stage_runner import run_stage
from sana_core import train as T
from sana_core.latents import train_codec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_threads():
    """The process default a many-core machine would have (2 here), so a loop that ignored its pin would show it."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_tiny_profile_pins_both_training_thread_counts_and_dvc_tracks_them():
    tiny = P.load_profile("tiny")
    assert tiny["train"]["num_threads"] == 2 and tiny["codec_train"]["num_threads"] == 2
    assert P.load(ROOT)["train"]["num_threads"] == 2          # params.yaml = the tiny profile
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # a changed count re-runs the stages whose outputs depend on it
    assert "codec_train" in stages["codec"]["params"]
    for s in P.TRAINING_STAGES:
        st = stages[s].get("do", stages[s])
        assert "train" in st["params"], s
    with pytest.raises(ValueError, match="codec_train.num_threads: 0 must be >= 1"):
        P.validate(P.deep_merge(P.load_profile("tiny"), {"codec_train": {"num_threads": 0}}))


def _tiny_data(n=8, length=6):
    g = torch.Generator().manual_seed(1)
    mask = (torch.arange(length)[None] < torch.randint(2, length + 1, (n, 1), generator=g)).long()
    return T.TensorData(torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, length, 32, generator=g), mask,
                        torch.randn(1, length, 32, generator=g))


def test_train_runs_at_the_pinned_count_and_records_it(two_threads, tmp_path):
    from sana_core.model import build_transformer
    model = build_transformer("smoke", seed=0, in_channels=4, out_channels=4, caption_channels=32)
    seen = []
    summary = T.train(model, _tiny_data(), dict(steps=2, batch_size=4, log_every=1, num_threads=1, progress=False),
                      tmp_path, callback=lambda step, logs: seen.append(torch.get_num_threads()), resume=False)
    assert seen == [1, 1]
    assert summary["num_threads"] == 1 and summary["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert torch.get_num_threads() == 2                                   # the process's count is restored


def test_train_codec_runs_at_the_pinned_count_and_records_it(two_threads):
    imgs = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    seen = []
    _, rep = train_codec(imgs, "smoke", steps=2, batch_size=4, n_val=4, calibrate=False, num_threads=1,
                         callback=lambda step, loss, lr: seen.append(torch.get_num_threads()))
    assert seen == [1, 1] and rep["num_threads"] == 1 and torch.get_num_threads() == 2
    _, rep = train_codec(imgs, "smoke", steps=1, batch_size=4, n_val=4, calibrate=False)   # None: the process's
    assert rep["num_threads"] == 2
    with pytest.raises(ValueError, match="num_threads=0"):
        train_codec(imgs, "smoke", steps=1, num_threads=0)


def test_codec_stage_trains_at_codec_train_num_threads(two_threads, tmp_path, monkeypatch):
    monkeypatch.setenv("SANA15_TRACKING", "0")
    P.use_profile("smoke", tmp_path)
    d = P.read_yaml(tmp_path / "params.yaml", roundtrip=True)
    d["codec_train"]["num_threads"] = 1
    P.write_yaml_atomic(d, tmp_path / "params.yaml")
    for name in ("data", "codec"):
        rec = run_stage(name, getattr(importlib.import_module(f"flows.stages.{name}"), name), argv=[], root=tmp_path)
    assert rec["num_threads"] == 1 and rec["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert torch.get_num_threads() == 2
