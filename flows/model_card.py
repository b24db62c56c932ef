"""README.md model card of a model folder (`models/<variant>`), written inside the stage's atomic folder write
(flows/stages/_common.save_model_dir), with Hugging Face's `ModelCard` + diffusers' `populate_model_card` (library
name, tags) so the Hub and `huggingface_hub.ModelCard.load` read it.

It says what the model is (SanaTransformer2DModel, depth, parameters, the world it was trained in), its lineage
(stage, parent folder, steps, training FLOPs of this stage and of the whole lineage when the lineage's metrics exist),
its GenEval-Shapes score when known (the in-stage quick check, N = 1), and how to load it in stock `SanaPipeline`
with the two flags it needs (`complex_human_instruction=None`, `use_resolution_binning=False`)."""
from __future__ import annotations

import json
from pathlib import Path

from flows.params import lineage

PARENT = {"pretrain_base": None, "grow": "pretrain_base", "pretrain_grown": "grow", "sft": "pretrain_grown"}
TAGS = ["sana15", "sana", "text-to-image", "geneval-shapes"]


def parent_of(variant: str, params: dict) -> str | None:
    """The model folder a variant starts from (None = trained from its init)."""
    if variant in PARENT:
        return PARENT[variant]
    stage, _, t = variant.rpartition("_")
    return {"prune": params["importance"]["source"], "finetune": f"prune_{t}", "scratch": None}.get(stage)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _flops(x) -> str:
    return f"{float(x):.3g}" if isinstance(x, (int, float)) else "unknown"


def card_text(folder: Path, variant: str, params: dict, root: Path) -> str:
    """The card's markdown body (no YAML header) for the folder's files and the project's metrics."""
    meta, tcfg = _json(folder / "sana15.json"), _json(folder / "transformer" / "config.json")
    quick = meta.get("geneval_quick")
    summary = _json(folder / "train_summary.json")
    stage, parent = meta.get("stage", variant), parent_of(variant, params)
    try:
        chain = lineage(variant, params)
    except ValueError:
        chain = []
    parts = [summary.get("flops") if s == variant else _json(root / "metrics" / f"{s}.json").get("flops")
             for s in chain]
    lineage_flops = sum(parts) if chain and all(isinstance(x, (int, float)) for x in parts) else None
    w = int(meta.get("width") or meta.get("image_size") or 64)
    chi = meta.get("complex_human_instruction")
    chi_arg = "None" if not chi else "<the 'complex_human_instruction' list in sana15.json>"
    q = quick or {}
    score = (f"{q['overall']:.3f} (in-stage check: N = 1, first {q.get('n_images', '?')} eval_iid prompts; "
             f"the `geneval@{variant}` stage gives the benchmark numbers)") if "overall" in q else \
        f"not measured at save time: see `metrics/geneval_{variant}.json` / `sana15 compare`"
    return "\n".join([
        f"# sana15 `{variant}`",
        "",
        f"A SANA-1.5 linear DiT (`SanaTransformer2DModel`, {tcfg.get('num_layers', '?')} blocks, hidden size "
        f"{tcfg.get('num_attention_heads', 0) * tcfg.get('attention_head_dim', 0)}) in a stock `SanaPipeline` folder, "
        f"made by the `{stage}` stage of the sana15 pipeline (profile `{params.get('profile')}`), "
        f"trained on GenEval-Shapes {w} px images.",
        "",
        "## Lineage",
        "",
        "| stage | parent | steps | training FLOPs (this stage) | training FLOPs (lineage) |",
        "|---|---|---|---|---|",
        f"| {stage} | {parent or 'init: ' + str(params['model']['init'])} | {summary.get('steps', 0)} | "
        f"{_flops(summary.get('flops', 0))} | {_flops(lineage_flops) if chain else '0'} |",
        "",
        f"Lineage (training stages whose compute this model embodies): {', '.join(chain) or 'none'}.",
        "",
        "## GenEval-Shapes",
        "",
        f"Overall: {score}.",
        "",
        "## Use",
        "",
        "```python",
        "from diffusers import SanaPipeline",
        "",
        f'pipe = SanaPipeline.from_pretrained("models/{variant}")',
        f'image = pipe("a photo of a red circle", height={w}, width={w},',
        f"             complex_human_instruction={chi_arg},   # no CHI prefix: trained without it",
        "             use_resolution_binning=False,    # the tiny sizes are not in SANA's aspect-ratio bins",
        f"             max_sequence_length={meta.get('max_sequence_length', 300)}, "
        f"num_inference_steps={meta.get('steps', 20)}, guidance_scale={meta.get('guidance_scale', 4.5)}).images[0]",
        "```",
        "",
        "The text encoder stored here is what the model was trained with (MiniLM `BertModel` on CPU profiles, Gemma-2 "
        "in the paper profile); `sana15.json` holds the sampling settings the pipeline used.",
    ])


def write_model_card(folder: Path, variant: str, params: dict, root: Path) -> Path:
    from diffusers.utils.hub_utils import populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="diffusers", pipeline_tag="text-to-image")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text(folder, variant, params, root)}\n")
    card = populate_model_card(card, tags=TAGS + [f"stage-{variant.rpartition('_')[0] or variant}"])
    card.save(str(folder / "README.md"))
    return folder / "README.md"
