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
    """A `Scorer` with the chosen evaluator: folder → (results DataFrame, summary); `.labels(images, metas)` → the
    same verdicts of in-memory images. For 'geneval' the model folders are checked now (FileNotFoundError naming
    `geneval.detector` / `geneval.clip`) and loaded once, on first use."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator: {evaluator!r} is not one of {list(EVALUATORS)}")
    if evaluator == "geneval":
        from pathlib import Path

        for value, key in ((detector, "geneval.detector"), (clip, "geneval.clip")):
            if not value or not (Path(value) / "config.json").is_file():
                raise FileNotFoundError(f"{key}: {value!r} is not a local transformers model folder (config.json); "
                                        f"the real-data GenEval evaluator needs Mask2Former Swin-S COCO instance and "
                                        f"CLIP ViT-L/14 folders")
    return Scorer(evaluator, world, detector, clip, int(batch_size), device)


class Scorer:
    """One evaluator, two entry points: a GenEval-layout folder (`__call__`, writes results.jsonl + summary.json) and
    in-memory uint8 images (`labels`: the geneval stage labels every best-of-N candidate once with it)."""

    def __init__(self, evaluator, world, detector, clip, batch_size, device):
        self.evaluator, self.world, self.detector, self.clip = evaluator, world, detector, clip
        self.batch_size, self.device, self._models = batch_size, device, None

    def models(self):
        if self._models is None:
            from .mask2former import ColorClassifier, Detector

            self._models = (Detector(self.detector, self.device, self.batch_size, key="geneval.detector"),
                            ColorClassifier(self.clip, self.device, max(16, self.batch_size), key="geneval.clip"))
        return self._models

    def __call__(self, folder, **kw):
        if self.evaluator == "shapes":
            from .score import score_folder

            return score_folder(folder, self.world, **kw)
        from .official_score import score_folder

        det, col = self.models()
        return score_folder(folder, det, col, batch_size=self.batch_size, **kw)

    def labels(self, images, metas) -> list[bool]:
        """correct / not of images[i] (uint8 H×W×3) for metas[i], as the folder scorer would judge its PNG."""
        if self.evaluator == "shapes":
            from .score import score_image

            return [bool(score_image(im, m, self.world)[0]) for im, m in zip(images, metas)]
        from PIL import Image

        from .official_score import score_images

        det, col = self.models()
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = [Image.fromarray(im).convert("RGB") for im in images[i:i + self.batch_size]]
            out += [bool(r[0]) for r in score_images(chunk, list(metas[i:i + self.batch_size]), det, col)]
        return out
