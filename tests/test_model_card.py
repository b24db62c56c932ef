"""Every model folder carries a README.md model card (flows/model_card.py, written inside save_model_dir's atomic
write): what the model is, its lineage with FLOPs, its GenEval-Shapes score when known, and the stock SanaPipeline
call with the two flags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows import params as P
from flows.stages import _common as C


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from sana_core.latents import build_codec
    from sana_core.text import build_text_encoder

    root = tmp_path_factory.mktemp("card")
    params = P.load_profile("smoke")
    codec_ = build_codec("f4c16")
    model = C.new_transformer(params, codec_)
    (root / "metrics").mkdir()
    for stage, f in {"pretrain_base": 1.0e12, "pretrain_grown": 2.0e11}.items():
        (root / "metrics" / f"{stage}.json").write_text(json.dumps({"flops": f}))
    params["data"]["image_size"] = 32
    C.save_model_dir(root, "models/sft", model, codec_, build_text_encoder(params["text"]), params,
                     meta={"stage": "sft", "geneval_quick": {"overall": 0.375, "n_images": 8}},
                     extra_json={"train_summary.json": {"steps": 2, "flops": 3.0e10}})
    return root / "models" / "sft", params


def test_card_is_a_hub_model_card_with_lineage_score_and_usage(folder):
    from huggingface_hub import ModelCard

    path, params = folder
    card = ModelCard.load(path / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-image"
    assert {"sana15", "text-to-image", "stage-sft"} <= set(card.data.tags)
    text = card.text
    assert "SanaTransformer2DModel`, 2 blocks" in text and "made by the `sft` stage" in text
    assert "| sft | pretrain_grown | 2 | 3e+10 | 1.23e+12 |" in text            # 1e12 + 2e11 + 3e10
    assert "Lineage (training stages whose compute this model embodies): pretrain_base, pretrain_grown, sft." in text
    assert "Overall: 0.375 (in-stage check: N = 1, first 8 eval_iid prompts" in text
    assert 'SanaPipeline.from_pretrained("models/sft")' in text and "height=32, width=32" in text
    assert "complex_human_instruction=None" in text and "use_resolution_binning=False" in text
    assert f"max_sequence_length={params['text']['max_length']}" in text


def test_card_lives_in_the_stock_pipeline_folder(folder):
    from diffusers import SanaPipeline

    path, _ = folder
    assert {"README.md", "model_index.json", "sana15.json"} <= {p.name for p in path.iterdir()}
    pipe = SanaPipeline.from_pretrained(str(path))
    assert len(pipe.transformer.transformer_blocks) == 2


def test_parents_and_untrained_variants():
    from flows.model_card import parent_of

    params = P.load_profile("tiny")
    assert [parent_of(v, params) for v in ("pretrain_base", "grow", "pretrain_grown", "sft", "prune_6",
                                           "finetune_6", "scratch_6")] == \
        [None, "pretrain_base", "grow", "pretrain_grown", "sft", "prune_6", None]
