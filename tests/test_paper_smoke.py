"""The paper profile's code path on every CI run: `profiles/paper_smoke.yaml` (tiny random Gemma-2 + CHI, a random
f32c32 AutoencoderDC, CAME-8bit, bf16, gradient checkpointing, each training stage in 2 processes under `accelerate
launch`) through a real `dvc repro` of the project's dvc.yaml in a temp git repo, end to end."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flows import params as P

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
TRAINING = ("pretrain_base", "pretrain_grown", "sft", "finetune_2", "scratch_2")


def _sh(cmd, cwd, timeout=1500):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]), PYTHONPATH=str(ROOT),
               SANA15_TRACKING="0", OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from paper_smoke_components import build
    repo = tmp_path_factory.mktemp("paper_smoke")
    _sh(["git", "init", "-q"], repo)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    (repo / ".dvcignore").write_text("__pycache__/\n*.pyc\ncomponents/\n")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    for d in ("flows", "sana_core", "profiles"):
        shutil.copytree(ROOT / d, repo / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    P.use_profile("paper_smoke", repo)
    build(repo)
    t0 = time.perf_counter()
    p = _sh([sys.executable, "-m", "dvc", "repro"], repo)
    print(f"paper_smoke dvc repro: {time.perf_counter() - t0:.0f} s")
    return repo, p.stdout + p.stderr


def test_paper_smoke_dag_runs_end_to_end(repo):
    root, log = repo
    params = P.load(root)
    for v in P.model_variants(params):
        assert (root / "models" / v / "model_index.json").is_file(), v
    for stage in TRAINING:
        m = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert m["world_size"] == 2, stage  # re-launched under accelerate launch
        assert m["loss"] == m["loss"] and m["loss"] < 10, stage  # finite
    assert log.count("2 processes: ") >= len(TRAINING)
    assert (root / "reports" / "report.json").is_file()
    assert not (root / ".work").exists()


def test_paper_smoke_model_folder_is_a_stock_sana_pipeline_with_gemma2_and_dcae(repo):
    from diffusers import AutoencoderDC, SanaPipeline
    from transformers import Gemma2Model
    root, _ = repo
    pipe = SanaPipeline.from_pretrained(str(root / "models" / "sft"))
    assert isinstance(pipe.text_encoder, Gemma2Model) and isinstance(pipe.vae, AutoencoderDC)
    assert pipe.vae.config.latent_channels == 32 and len(pipe.vae.config.encoder_block_out_channels) == 6  # f32c32
    assert pipe.transformer.config.in_channels == 32 and pipe.transformer.dtype == torch.float32
    img = pipe("a photo of a red circle", num_inference_steps=2, height=64, width=64, output_type="np",
               use_resolution_binning=False,
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 64, 64, 3)
