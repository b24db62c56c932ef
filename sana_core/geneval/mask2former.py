"""GenEval's perception with transformers instead of mmdet/open_clip: a COCO instance detector and a CLIP colour
classifier, both loaded from local folders (geneval.md §4; the rules that use them are in `official.py`).

Detector (`Detector`): `Mask2FormerForUniversalSegmentation` + its image processor (the PIL backend, no torchvision).
Pre-processing follows mmdet's test pipeline for GenEval's config: keep-ratio bilinear resize to MMDET_SCALE
(shortest side 800, longest at most 1333 — mmdet's img_scale (1333, 800) — with mmcv's rounding, `mmdet_size`; the
checkpoint's own processor size is overridden because GenEval fixes this scale, `scale=None` keeps it), ImageNet
normalisation, then zero padding at the bottom/right to a multiple of 32 (the processor's own `size_divisor` would
*stretch* the image to a multiple of 32; we pass 0 and pad). Post-processing is mmdet's
`MaskFormerFusionHead.instance_postprocess`: mask logits upsampled (bilinear) to the padded input, cropped to the
resized image, upsampled to the original size; class probabilities = softmax without the "no object" column; the top
MAX_PER_IMAGE = 100 (query, class) pairs over all queries × classes (one query may give several classes); binary
mask = logit > 0; score = class prob × mean mask probability inside the binary mask; box = tight box of the mask
[x0, y0, x_last + 1, y_last + 1] (`mask2bbox`; all zeros for an empty mask); no NMS. Only images of one size share
a batch. The detector's labels are mapped to GenEval's class names by *name* through `config.id2label`
(`official.DETECTOR_NAMES` for mouse/remote/keyboard), not by position; a checkpoint lacking any of the 80 classes
is refused.

Colour (`ColorClassifier`): `CLIPModel` + tokenizer + image processor (PIL backend). For each object the image is
pasted through its binary mask onto flat #999 and cropped to its box (GenEval's `ImageCrops`); the crop gets CLIP's
eval transform (bicubic short side 224, centre crop, OpenAI mean/std). Per class a zero-shot head over GenEval's 10
colours is built once, as clip_benchmark's `zero_shot_classifier`: per colour the mean of the L2-normalised text
embeddings of the three `COLOR_TEMPLATES`, re-normalised; prediction = argmax of normalize(image embedding) · W.
Like clip_benchmark 1.4.0 (amp=True), head and logits run under fp16 autocast on CUDA; on CPU in fp32. One
difference, noted in docs/geneval-official.md: transformers' PIL resize in place of torchvision's.

Both run under `torch.inference_mode()` on `resolve_device("auto")` = CUDA when available, else CPU, in batches of
`batch_size` images (detector) / crops (CLIP).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .official import BGCOLOR, COCO_CLASSES, COLOR_TEMPLATES, DETECTOR_NAMES, Det
from .world import COLORS

MAX_PER_IMAGE = 100          # (query, class) pairs kept per image (mmdet test_cfg.max_per_image)
PAD_DIVISOR = 32             # mmdet Pad(size_divisor=32)
MMDET_SCALE = (800, 1333)    # (shortest, longest) test resize of GenEval's mmdet config, img_scale=(1333, 800)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA if available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_dir(path, what: str, key: str) -> Path:
    """A local model folder with a config.json; FileNotFoundError naming the option `key` otherwise."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{key}: no {what} folder given (a local transformers folder with config.json)")
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {what} folder {p} has no config.json (expected a local transformers "
                                f"model folder; nothing is downloaded)")
    return p


def _model_and_processor_dir(path, what: str, key: str, batch_size) -> tuple[Path, int]:
    """`_model_dir` that also holds the image processor (preprocessor_config.json), and the batch size checked."""
    p = _model_dir(path, what, key)
    if not (p / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{key}: {p} has no preprocessor_config.json (the {what} image processor)")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: must be ≥ 1, got {batch_size}")
    return p, int(batch_size)


def label_map(id2label: dict, where: str) -> dict[int, str]:
    """Detector label id → GenEval class name, for the 80 classes; ValueError naming `where` if any is missing."""
    by_name = {str(v).strip().lower(): int(k) for k, v in id2label.items()}
    out, missing = {}, []
    for cls in COCO_CLASSES:
        name = DETECTOR_NAMES.get(cls, cls)
        if name in by_name:
            out[by_name[name]] = cls
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"{where}: id2label lacks {len(missing)} of GenEval's 80 COCO classes, e.g. {missing[:5]} "
                         f"(a COCO instance-segmentation checkpoint is needed)")
    return out


def mmdet_size(h: int, w: int, scale: tuple[int, int] = MMDET_SCALE) -> tuple[int, int]:
    """mmcv `rescale_size` with keep_ratio: factor min(long/max(h, w), short/min(h, w)), sides rounded half up
    (transformers' own keep-ratio resize truncates: 384 × 512 → 800 × 1066 there, 800 × 1067 in mmdet)."""
    short, long = min(scale), max(scale)
    f = min(long / max(h, w), short / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """mmdet `mask2bbox`: [N, H, W] bool → [N, 4] float [x0, y0, x_last + 1, y_last + 1]; zeros for empty masks."""
    n, h, w = masks.shape
    xs, ys = masks.any(dim=1), masks.any(dim=2)                      # [N, W], [N, H]
    ar_x = torch.arange(w, device=masks.device)
    ar_y = torch.arange(h, device=masks.device)
    x0 = torch.where(xs, ar_x, w).min(dim=1).values
    x1 = torch.where(xs, ar_x, -1).max(dim=1).values + 1
    y0 = torch.where(ys, ar_y, h).min(dim=1).values
    y1 = torch.where(ys, ar_y, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(xs.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def fuse_instances(class_logits: torch.Tensor, mask_logits: torch.Tensor, min_score: float = 0.0,
                   max_per_image: int = MAX_PER_IMAGE, resize=None
                   ) -> list[tuple[int, float, torch.Tensor, torch.Tensor]]:
    """mmdet's instance post-processing for one image: class_logits [Q, C + 1], mask_logits [Q, H, W] at the
    original image size — or at any size with `resize` mapping [n, h, w] logits to the original size, applied only
    to the queries in the top-k (memory) → [(label, score, box [4], mask [H, W] bool)] in descending score, those
    with score > min_score only (GenEval's threshold is applied later; dropping lower ones early changes nothing)."""
    q, c1 = class_logits.shape
    probs = class_logits.float().softmax(-1)[:, :-1]                  # drop "no object"
    k = min(max_per_image, probs.numel())
    top_scores, top_idx = probs.flatten().topk(k)
    queries, labels = top_idx // (c1 - 1), top_idx % (c1 - 1)
    uq, inv = queries.unique(return_inverse=True)
    m = mask_logits[uq].float()
    m = resize(m) if resize is not None else m
    binary = m > 0
    mask_score = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    boxes = _boxes_from_masks(binary)
    scores = top_scores * mask_score[inv]
    out = []
    for j in torch.argsort(scores, descending=True, stable=True).tolist():
        s = float(scores[j])
        if s <= min_score:
            break
        out.append((int(labels[j]), s, boxes[inv[j]].cpu(), binary[inv[j]].cpu()))
    return out


class Detector:
    """Mask2Former COCO instance segmentation → per image {GenEval class: [Det]} (all scores > min_score)."""

    def __init__(self, path, device: str | torch.device = "auto", batch_size: int = 4, key: str = "--detector",
                 scale: tuple[int, int] | None = MMDET_SCALE):
        from transformers import Mask2FormerForUniversalSegmentation
        from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

        p, self.batch_size = _model_and_processor_dir(path, "Mask2Former", key, batch_size)
        self.device = resolve_device(device)
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(p).to(self.device).eval()
        self.processor = Mask2FormerImageProcessorPil.from_pretrained(p)
        self.labels = label_map(self.model.config.id2label, f"{key}: {p / 'config.json'}")
        self.scale = None if scale is None else (int(scale[0]), int(scale[1]))

    def _inputs(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        kw = {}
        if self.scale:                      # callers batch only same-size images
            h, w = mmdet_size(images[0].size[1], images[0].size[0], self.scale)
            kw["size"] = {"height": h, "width": w}
        enc = self.processor(images=list(images), size_divisor=0, return_tensors="pt", **kw)
        x, valid = enc["pixel_values"], enc["pixel_mask"]
        sizes = [(int(v.any(1).sum()), int(v.any(0).sum())) for v in valid]      # resized (h, w) before padding
        h, w = x.shape[-2:]
        ph, pw = -(-h // PAD_DIVISOR) * PAD_DIVISOR, -(-w // PAD_DIVISOR) * PAD_DIVISOR
        return F.pad(x, (0, pw - w, 0, ph - h)), sizes

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image], min_score: float = 0.0) -> list[dict[str, list[Det]]]:
        """Per image {class: [Det]} in input order. Only images of one size share a batch: GenEval runs one image
        at a time, and zero padding to a larger neighbour would change the features."""
        out: list[dict[str, list[Det]] | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.size, []).append(i)
        for (W, H), idx in by_size.items():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s:s + self.batch_size]
                x, sizes = self._inputs([images[i] for i in chunk])
                res = self.model(pixel_values=x.to(self.device))
                rh, rw = sizes[0]
                pad_hw = tuple(x.shape[-2:])

                # mmdet: logits up to the padded input, crop to the resized image, then to the original size
                def resize(m, pad_hw=pad_hw, rh=rh, rw=rw, H=H, W=W):
                    m = F.interpolate(m[None], size=pad_hw, mode="bilinear", align_corners=False)[:, :, :rh, :rw]
                    return F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)[0]

                for b, i in enumerate(chunk):
                    per_class: dict[str, list[Det]] = {}
                    for label, score, box, mask in fuse_instances(res.class_queries_logits[b],
                                                                     res.masks_queries_logits[b], min_score,
                                                                     resize=resize):
                        cls = self.labels.get(label)
                        if cls is not None:
                            per_class.setdefault(cls, []).append(Det(tuple(box.tolist()), score, mask.numpy()))
                    out[i] = per_class
        return out


def colour_crop(image: Image.Image, det: Det) -> Image.Image:
    """GenEval's `ImageCrops` item: the image through the object's mask onto #999, cropped to its box."""
    image = image.convert("RGB")
    if det.mask is not None:
        if det.mask.shape != (image.size[1], image.size[0]):
            raise ValueError(f"colour_crop: mask {det.mask.shape} does not match image {image.size[::-1]}")
        image = Image.composite(image, Image.new("RGB", image.size, BGCOLOR), Image.fromarray(det.mask))
    return image.crop(tuple(det.box[:4]))


def _pooled(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ColorClassifier:
    """CLIP zero-shot colour of masked object crops over GenEval's 10 colours. `amp` (default: on CUDA) computes the
    head and the logits under fp16 autocast, as clip_benchmark 1.4.0 does by default on GenEval's CUDA device."""

    def __init__(self, path, device: str | torch.device = "auto", batch_size: int = 16, key: str = "--clip",
                 amp: bool | None = None):
        from transformers import AutoTokenizer, CLIPModel
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        p, self.batch_size = _model_and_processor_dir(path, "CLIP", key, batch_size)
        self.device = resolve_device(device)
        self.model = CLIPModel.from_pretrained(p).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(p)
        self.processor = CLIPImageProcessorPil.from_pretrained(p)
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self._heads: dict[str, torch.Tensor] = {}

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    @torch.inference_mode()
    def head(self, classname: str) -> torch.Tensor:
        """[D, 10] zero-shot weights for `classname` (cached)."""
        if classname not in self._heads:
            cols = []
            with self._autocast():
                for c in COLORS:
                    texts = [t.format(c=c, cls=classname) for t in COLOR_TEMPLATES]
                    tok = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
                    e = F.normalize(_pooled(self.model.get_text_features(**tok)), dim=-1).mean(0)
                    cols.append(e / e.norm())
            self._heads[classname] = torch.stack(cols, dim=1)
        return self._heads[classname]

    @torch.inference_mode()
    def __call__(self, crops: Sequence[Image.Image], classnames: Sequence[str]) -> list[str]:
        """Colour name of each crop (crop i is an object of classnames[i])."""
        out: list[str] = []
        for i in range(0, len(crops), self.batch_size):
            px = self.processor(images=list(crops[i:i + self.batch_size]), return_tensors="pt")["pixel_values"]
            names = classnames[i:i + self.batch_size]
            heads = [self.head(cls) for cls in names]
            with self._autocast():
                emb = F.normalize(_pooled(self.model.get_image_features(pixel_values=px.to(self.device))), dim=-1)
                logits = [100.0 * e @ h for e, h in zip(emb, heads)]
            out += [COLORS[int(lg.float().argmax())] for lg in logits]
        return out
