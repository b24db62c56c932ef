"""The training + surgery chain of stage functions, end to end on the smoke profile (no DVC):
data → codec → encode → curate → pretrain_base → grow → pretrain_grown → sft → importance → prune@t → finetune@t →
scratch@t, each through flows.stage_runner.run_stage (validated params.yaml, metrics/<stage>.json) in a temp root."""
from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flows import params as P
from flows.stage_runner import run_stage

CHAIN = ["data", "codec", "encode", "curate", "pretrain_base", "grow", "pretrain_grown", "sft", "importance"]


def _params(root: Path, **edits) -> dict:
    """Smoke profile → root/params.yaml; 1 thread (2 threads on a shared 2-core box are 10-40x slower per step)."""
    P.use_profile("smoke", root)
    d = P.read_yaml(root / "params.yaml", roundtrip=True)
    d["train"]["num_threads"] = 1
    for dotted, v in edits.items():
        sec, key = dotted.split(".")
        d[sec][key] = v
    P.write_yaml_atomic(d, root / "params.yaml")
    return P.load(root)


def _run(root: Path, name: str, item: str | None = None) -> dict:
    fn = getattr(importlib.import_module(f"flows.stages.{name}"), name)
    return run_stage(name, fn, argv=[item] if item else [], root=root)


def _metrics(root: Path, stem: str) -> dict:
    return json.loads((root / "metrics" / f"{stem}.json").read_text())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    old_env, old_threads = os.environ.get("SANA15_TRACKING"), torch.get_num_threads()
    os.environ["SANA15_TRACKING"] = "0"
    torch.set_num_threads(1)
    try:
        params = _params(root)
        (t,) = params["prune"]["targets"]
        for name in CHAIN:
            _run(root, name)
        for name in ("prune", "finetune", "scratch"):
            _run(root, name, str(t))
        yield root, params, t
    finally:
        torch.set_num_threads(old_threads)
        if old_env is None:
            os.environ.pop("SANA15_TRACKING", None)
        else:
            os.environ["SANA15_TRACKING"] = old_env


def _transformer(root: Path, rel: str):
    from diffusers import SanaTransformer2DModel
    return SanaTransformer2DModel.from_pretrained(str(root / rel), subfolder="transformer").eval()


def test_every_out_exists_and_no_temp_left(chain):
    root, params, t = chain
    outs = ["data/shapes/metadata.jsonl", "models/codec/config.json", "data/cache/index.json", "data/curated/scores.csv",
            "data/curated/selected.json", "importance/importance.json", "importance/importance.png",
            "plots/importance.json", "models/pretrain_base/samples.png", "models/grow/growth_layout.json",
            f"models/prune_{t}/pruned.json"]
    outs += [f"models/{v}/model_index.json" for v in P.model_variants(params)]
    outs += [f"metrics/{s}.json" for s in CHAIN + [f"prune_{t}", f"finetune_{t}", f"scratch_{t}"]]
    outs += [f"plots/{s}.json" for s in ("pretrain_base", "pretrain_grown", "sft", f"finetune_{t}", f"scratch_{t}")]
    assert [o for o in outs if not (root / o).exists()] == []
    leftovers = [p.name for d in (root / "models", root / "data") for p in d.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (root / ".work").exists()


def test_models_reload_in_stock_diffusers_with_their_depths(chain):
    from diffusers import SanaPipeline
    root, params, t = chain
    from sana_core.model import PROFILES
    depth0, grown = PROFILES[params["model"]["profile"]]["num_layers"], params["grow"]["target_depth"]
    want = {"pretrain_base": depth0, "grow": grown, "pretrain_grown": grown, "sft": grown, f"prune_{t}": t,
            f"finetune_{t}": t, f"scratch_{t}": t}
    for v, d in want.items():
        pipe = SanaPipeline.from_pretrained(str(root / "models" / v))
        assert len(pipe.transformer.transformer_blocks) == pipe.transformer.config.num_layers == d, v
        assert _metrics(root, v)["depth"] == d


def test_training_metrics_and_step_history(chain):
    root, params, t = chain
    for stage, n in (("pretrain_base", None), ("pretrain_grown", None), ("sft", None), ("finetune", str(t))):
        stem = stage if n is None else f"{stage}_{n}"
        m = _metrics(root, stem)
        steps, bs = params[stage]["steps"], params[stage]["batch_size"]
        assert m["steps"] == steps and m["samples"] == steps * bs
        assert m["flops"] == pytest.approx(3 * m["flops_per_sample_forward"] * steps * bs)
        assert m["wall_time_s"] > 0 and torch.isfinite(torch.tensor(m["loss"]))
        hist = json.loads((root / "plots" / f"{stem}.json").read_text())
        assert [h["step"] for h in hist] == list(range(1, steps + 1)) and hist[-1]["loss"] == pytest.approx(m["loss"])
        q = m["geneval_quick"]
        assert q["n_images"] == params["quick_eval"]["n_prompts"] and 0.0 <= q["overall"] <= 1.0
    assert _metrics(root, f"finetune_{t}")["geneval_quick_before"]["n_images"] == params["quick_eval"]["n_prompts"]
    n_curated = len(json.loads((root / "data/curated/selected.json").read_text())["rows"])
    sft = _metrics(root, "sft")
    assert sft["n_train"] == n_curated and (sft["subset"], sft["n_subset"]) == ("curated", n_curated)


def test_sft_random_subset_is_the_curation_control(chain, monkeypatch):
    """sft.subset=random: a seeded random sample of the training pool, exactly as many rows as the curated subset,
    never a brought dataset's held-out rows — and it is what the stage trains on."""
    from flows.stages import _common as C
    from flows.stages.sft import sft

    root, params, _ = chain
    curated = C.curated_rows(root)
    n = json.loads((root / "data/cache/index.json").read_text())["n"]
    rnd = {**params, "sft": {**params["sft"], "subset": "random"}}
    rows, info = C.sft_rows(rnd, root)
    assert len(rows) == len(curated) < n and len(set(rows.tolist())) == len(rows)
    assert rows.min() >= 0 and rows.max() < n and list(rows) == sorted(rows)
    assert info == {"subset": "random", "n_subset": len(curated), "n_pool": n,
                    "overlap_with_curated": pytest.approx(float(np.isin(rows, curated).mean()))}
    assert not np.array_equal(rows, curated)
    assert np.array_equal(C.sft_rows(rnd, root)[0], rows)                              # seeded: same twice
    assert not np.array_equal(C.sft_rows({**rnd, "seed": rnd["seed"] + 1}, root)[0], rows)   # another seed
    assert np.array_equal(C.sft_rows(params, root)[0], curated)                        # default: curated
    # a brought dataset: its last importance.n_prompts rows are held out; leave exactly the curated size outside them
    brought = {**rnd, "data": {**rnd["data"], "source": "imagefolder"},
               "importance": {**rnd["importance"], "n_prompts": n - len(curated)}}
    assert np.array_equal(C.sft_rows(brought, root)[0], np.arange(len(curated)))
    brought["importance"]["n_prompts"] += 1
    with pytest.raises(ValueError, match="sft.subset: random: the curated subset .* larger than the training pool"):
        C.sft_rows(brought, root)
    # the stage streams those rows (train_and_save spied: no training, nothing written)
    seen = {}

    def spy(model, data, params_, stage, *a, **k):
        seen.update(stage=stage, rows=data.rows.numpy().copy(), meta=k.get("meta"))
        return {"n_train": len(data)}

    monkeypatch.setattr(C, "train_and_save", spy)
    m = sft(rnd, root)
    assert seen["stage"] == "sft" and np.array_equal(seen["rows"], rows) and seen["meta"]["subset"] == "random"
    assert (m["subset"], m["n_subset"], m["n_train"]) == ("random", len(curated), len(curated))


def test_curation_keeps_the_evaluators_correct_pairs(chain):
    import pandas as pd
    root, params, _ = chain
    df = pd.read_csv(root / "data/curated/scores.csv")
    m = _metrics(root, "curate")
    kept = df[df.kept]
    assert len(kept) == m["n_kept"] == min(params["curate"]["max_samples"], int((df.score >= 1).sum()))
    assert kept.correct.all() and kept.score.min() >= df[~df.kept & df.correct].score.max()
    # caption defects are caught by the completeness-aware evaluator; clean pairs pass it
    assert not df[df.defect.isin(["wrong_caption", "incomplete_caption"])].correct.any()
    assert df[df.defect == "none"].correct.all()
    assert m["defect_frac_kept"] < m["defect_frac_pool"] < m["defect_frac_dropped"]


def test_partial_preservation_grown_equals_truncated_base_at_init(chain):
    from sana_core.surgery_io import with_blocks
    root, params, _ = chain
    layout = json.loads((root / "models/grow/growth_layout.json").read_text())
    base, grown = _transformer(root, "models/pretrain_base"), _transformer(root, "models/grow")
    keep = len(base.transformer_blocks) - params["grow"]["drop_last"]
    assert layout["layout"] == list(range(keep)) + ["new"] * (params["grow"]["target_depth"] - keep)
    trunc = with_blocks(base, [base.transformer_blocks[i] for i in range(keep)])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 8, 8, generator=g)
    emb = torch.randn(2, 6, base.config.caption_channels, generator=g)
    with torch.no_grad():
        a = trunc(x, encoder_hidden_states=emb, timestep=torch.tensor([100.0, 900.0]), return_dict=False)[0]
        b = grown(x, encoder_hidden_states=emb, timestep=torch.tensor([100.0, 900.0]), return_dict=False)[0]
    assert torch.equal(a, b) and _metrics(root, "grow")["init_max_abs_diff_vs_truncated"] == 0.0


def test_importance_and_pruning_keep_the_most_important_blocks(chain):
    root, params, t = chain
    imp = json.loads((root / "importance/importance.json").read_text())
    depth = params["grow"]["target_depth"]
    assert len(imp["bi"]) == len(_metrics(root, "importance")["bi"]) == depth == imp["n_blocks"]
    assert imp["n_prompts"] == params["importance"]["n_prompts"] and len(imp["per_timestep"]["sigmas"]) == params["importance"]["steps"]
    top = sorted(sorted(range(depth), key=lambda i: (-imp["bi"][i], i))[:t])
    pruned = json.loads((root / f"models/prune_{t}/pruned.json").read_text())
    assert pruned["kept"] == top == _metrics(root, f"prune_{t}")["kept"]
    src, pr = _transformer(root, f"models/{params['importance']['source']}"), _transformer(root, f"models/prune_{t}")
    for j, i in enumerate(top):  # the pruned model's blocks are the source's kept blocks, in order
        for (n1, p1), (n2, p2) in zip(src.transformer_blocks[i].named_parameters(), pr.transformer_blocks[j].named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)


def test_scratch_uses_the_lineage_compute(chain):
    root, params, t = chain
    m = _metrics(root, f"scratch_{t}")
    lineage = sum(_metrics(root, s)["flops"] for s in ("pretrain_base", "pretrain_grown", "sft", f"finetune_{t}"))
    assert m["flops_budget"] == pytest.approx(lineage)
    assert lineage - m["flops_per_step"] < m["flops"] <= lineage * (1 + 1e-9)
    assert m["steps"] * params["scratch"]["batch_size"] == m["samples"] and m["depth"] == t


def test_nan_in_pretrain_grown_raises_and_writes_nothing(chain, tmp_path, monkeypatch):
    from sana_core.train import NonFiniteLossError
    root, _, _ = chain
    for rel in ("data/shapes", "data/cache", "models/grow"):
        shutil.copytree(root / rel, tmp_path / rel)
    _params(tmp_path, **{"pretrain_grown.lr": 1.0e30})
    monkeypatch.setenv("SANA15_TRACKING", "0")
    with pytest.raises(NonFiniteLossError, match="non-finite training step"):
        _run(tmp_path, "pretrain_grown")
    assert not (tmp_path / "models/pretrain_grown").exists()
    assert not (tmp_path / "metrics/pretrain_grown.json").exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["grow"]


def test_bad_item_fails_before_compute(chain):
    from flows.stages.prune import prune
    root, params, _ = chain
    with pytest.raises(ValueError, match="prune.targets"):
        prune(params, root, "3")


def test_codec_with_path_loads_the_local_codec_and_trains_nothing(tmp_path, monkeypatch):
    """Paper profile: codec.path = a local AutoencoderDC folder (here a random smoke one): validated and pointed at,
    nothing trained; a missing folder fails naming codec.path before anything is written."""
    from flows.stages.codec import codec
    from sana_core.latents import build_codec
    monkeypatch.setenv("SANA15_TRACKING", "0")
    build_codec("smoke").save(tmp_path / "dcae")
    params = _params(tmp_path)
    params["codec"]["path"] = str(tmp_path / "dcae")
    m = codec(params, tmp_path)
    info = json.loads((tmp_path / "models/codec/codec.json").read_text())
    assert m["trained"] == 0 and info["path"] == str(tmp_path / "dcae") and info["factor"] == 4
    assert sorted(p.name for p in (tmp_path / "models/codec").iterdir()) == ["codec.json"]
    params["codec"]["path"] = str(tmp_path / "nope")
    shutil.rmtree(tmp_path / "models")
    with pytest.raises(FileNotFoundError, match="codec.path"):
        codec(params, tmp_path)
    assert not (tmp_path / "models").exists()


def test_curate_rejects_an_unknown_scorer_before_compute(chain):
    from flows.stages.curate import curate
    root, params, _ = chain
    bad = {**params, "curate": {**params["curate"], "scorer": "judge"}}
    with pytest.raises(ValueError, match="curate.scorer"):
        curate(bad, root / "nowhere")


def test_interrupted_training_stage_resumes_only_a_matching_checkpoint(chain, tmp_path, monkeypatch):
    """A stage killed after a checkpoint (here: model save fails) resumes it on the rerun; with a changed lr it starts
    afresh instead of resuming a checkpoint of another config."""
    from flows.stages import _common as C
    root, _, _ = chain
    for rel in ("data/shapes", "data/cache", "models/grow"):
        shutil.copytree(root / rel, tmp_path / rel)
    monkeypatch.setenv("SANA15_TRACKING", "0")
    _params(tmp_path, **{"pretrain_grown.steps": 2, "train.checkpoint_every": 2})
    real_save = C.save_model_dir

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(C, "save_model_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "pretrain_grown")
    assert (tmp_path / ".work/pretrain_grown/checkpoints/step_2").is_dir()
    assert not (tmp_path / "models/pretrain_grown").exists()
    monkeypatch.setattr(C, "save_model_dir", real_save)
    _params(tmp_path, **{"pretrain_grown.steps": 3, "train.checkpoint_every": 2})
    m = _run(tmp_path, "pretrain_grown")
    assert m["resumed_from"] == 2 and m["steps"] == 3 and not (tmp_path / ".work").exists()
    monkeypatch.setattr(C, "save_model_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "pretrain_grown")
    monkeypatch.setattr(C, "save_model_dir", real_save)
    _params(tmp_path, **{"pretrain_grown.steps": 3, "train.checkpoint_every": 2, "pretrain_grown.lr": 5.0e-5})
    m = _run(tmp_path, "pretrain_grown")
    assert m["resumed_from"] is None and m["steps"] == 3


def test_codec_reports_its_geneval_ceiling(chain):
    """The codec stage scores encode→decode of the eval_iid ground truth with the exact evaluator; an identity codec
    scores exactly 1.0 on the same prompts, so the metric measures the codec, not the renders."""
    from sana_core.geneval.layout import read_metadata_jsonl
    from flows.stages import _common as C
    root, params, _ = chain
    n = len(read_metadata_jsonl(root / "data/shapes/eval_iid.jsonl"))
    rt = _metrics(root, "codec")["roundtrip_geneval"]
    assert rt["n_images"] == n and 0.0 <= rt["overall"] <= 1.0
    assert rt["overall"] < 0.5  # the smoke codec trains for a few steps: its reconstructions must fail

    class Identity:
        def encode_uint8(self, images):
            return images

        def decode_uint8(self, z):
            return z

    ident = C.codec_roundtrip_geneval(Identity(), root, params)
    assert ident["overall"] == 1.0 and ident["n_images"] == n
