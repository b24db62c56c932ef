"""Which GenEval evaluator fits a data source, and one call that scores a folder with either.

- `shapes` (GenEval-Shapes, the default CPU world): the exact rule-based evaluator (`score.score_folder`: colour
  unmixing + template Dice, thresholds calibrated for rendered shapes).
- any real-image source (webdataset shards, an image folder, a `datasets` dataset — the `data.source` values of the
  data seam): GenEval's own evaluator re-built on transformers (`official_score.score_folder`: Mask2Former Swin-S
  COCO instance + CLIP ViT-L/14 colour, GenEval's thresholds 0.3 / 0.9), on real prompts
  (evaluation_metadata.jsonl).

Both write the same files (results.jsonl in GenEval's format, summary.json {overall, six tasks, n_images}) and
return (results DataFrame, summary dict), so the geneval stage and the CLI treat them alike.
"""
from __future__ import annotations

EVALUATORS = ("shapes", "geneval")


def evaluator_for(source: str) -> str:
    """'shapes' for the GenEval-Shapes world, 'geneval' (Mask2Former + CLIP) for every real-image source."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"data.source: expected 'shapes' or the name of a real-image source, got {source!r}")
    return "shapes" if source.strip() == "shapes" else "geneval"


def make_scorer(evaluator: str, world=None, detector=None, clip=None, batch_size: int = 4, device: str = "auto"):
    """folder → (results DataFrame, summary) with the chosen evaluator. For 'geneval' the model folders are checked
    now (FileNotFoundError naming `geneval.detector` / `geneval.clip`) and loaded once, on first use."""
    if evaluator == "shapes":
        from .score import score_folder

        return lambda folder, **kw: score_folder(folder, world, **kw)
    if evaluator != "geneval":
        raise ValueError(f"evaluator: {evaluator!r} is not one of {list(EVALUATORS)}")
    from pathlib import Path

    for value, key in ((detector, "geneval.detector"), (clip, "geneval.clip")):
        if not value or not (Path(value) / "config.json").is_file():
            raise FileNotFoundError(f"{key}: {value!r} is not a local transformers model folder (config.json); the "
                                    f"real-data GenEval evaluator needs Mask2Former Swin-S COCO instance and CLIP "
                                    f"ViT-L/14 folders")
    models: dict = {}

    def score(folder, **kw):
        from .mask2former import ColorClassifier, Detector
        from .official_score import score_folder

        if not models:
            models["det"] = Detector(detector, device, batch_size, key="geneval.detector")
            models["clip"] = ColorClassifier(clip, device, max(16, int(batch_size)), key="geneval.clip")
        return score_folder(folder, models["det"], models["clip"], batch_size=batch_size, **kw)

    return score
