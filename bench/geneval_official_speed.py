"""Cost of the real-GenEval evaluator (sana_core.geneval.mask2former) at GenEval's model sizes: seconds per image for
the detector and per object crop for CLIP, on the machine's best device.

    .venv/bin/python bench/geneval_official_speed.py [--n 2] [--size 1024] [--threads 1] [--device auto]

No weights are needed: the architectures are built from configs and randomly initialised — Mask2Former with a
Swin-S backbone (embed 96, depths 2-2-18-2, heads 3-6-12-24, window 7; 100 queries, 80 COCO classes; the layout of
facebook/mask2former-swin-small-coco-instance) and CLIP ViT-L/14 (vision 24 × 1024, patch 14, 224 px; text 12 × 768;
projection 768) — so the timing is the real models' (random weights change no FLOPs). Images are `--size` px
squares (SANA outputs 1024 px), resized to GenEval's 800 px scale by the detector. Prints a table: seconds per image
(detector: pre-processing, forward, fusion of the top 100 at full resolution) and per crop (CLIP, batch 16), and the
estimate for GenEval's 2212 images: detector + at most 294/553 ≈ 0.53 colour crops per image (94 colors prompts × 1
+ 100 color_attr × 2 objects, over 553 prompts; fewer when objects are missing).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(tmp: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPConfig, CLIPModel, Mask2FormerConfig, Mask2FormerForUniversalSegmentation,
                              PreTrainedTokenizerFast, SwinConfig)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    from sana_core.geneval.official import COCO_CLASSES, DETECTOR_NAMES
    from sana_core.geneval.world import COLORS

    names = [DETECTOR_NAMES.get(c, c) for c in COCO_CLASSES]
    sw = SwinConfig(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7,
                    out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=sw, num_queries=100, num_labels=80, use_pretrained_backbone=False,
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(tmp / "m2f")
    Mask2FormerImageProcessorPil().save_pretrained(tmp / "m2f")
    words = ["<unk>", "<pad>", "<s>", "</s>", "a", "photo", "of", "-", "colored", "object", *COLORS, *names]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>", model_max_length=77).save_pretrained(tmp / "clip")
    ccfg = CLIPConfig(text_config=dict(vocab_size=len(dict.fromkeys(words)), hidden_size=768, intermediate_size=3072,
                                       num_hidden_layers=12, num_attention_heads=12, eos_token_id=3, bos_token_id=2,
                                       pad_token_id=1),
                      vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                         num_attention_heads=16, image_size=224, patch_size=14), projection_dim=768)
    CLIPModel(ccfg).save_pretrained(tmp / "clip")
    CLIPImageProcessorPil().save_pretrained(tmp / "clip")
    return tmp / "m2f", tmp / "clip"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2, help="timed images (after one warm-up)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from sana_core.geneval.mask2former import ColorClassifier, Detector
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)) for _ in range(args.n + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        det_path, clip_path = build(Path(tmp))
        det = Detector(det_path, args.device, batch_size=1)
        col = ColorClassifier(clip_path, args.device)
        det(imgs[:1])
        t = time.perf_counter()
        det(imgs[1:])
        s_det = (time.perf_counter() - t) / args.n
        crops = [im.crop((0, 0, args.size // 3, args.size // 4)) for im in imgs] * 3
        col(crops[:2], ["dog"] * 2)
        t = time.perf_counter()
        col(crops[:16], ["dog"] * 16)
        s_clip = (time.perf_counter() - t) / 16
    n_params = "Mask2Former Swin-S + CLIP ViT-L/14 (random init)"
    print(f"device {det.device}, {args.threads} thread(s), {args.size} px images, {n_params}")
    print(f"{'part':<22} {'s/unit':>8}")
    print(f"{'detector (per image)':<22} {s_det:>8.3f}")
    print(f"{'CLIP (per crop)':<22} {s_clip:>8.3f}")
    est = 2212 * (s_det + 294 / 553 * s_clip)
    print(f"{'GenEval 2212 images':<22} {est / 3600:>7.2f}h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
