"""Shared test helpers (imported as `from helpers import ...`; pytest puts tests/ on sys.path)."""
import torch

from sana_core.model import build_transformer


def random_smoke_model(depth: int = 4, seed: int = 0):
    """Smoke-profile model with every parameter re-randomised (nothing zero, gates and norms non-trivial), so
    identity/equality checks of surgery code are meaningful. Returned in eval mode."""
    m = build_transformer("smoke", num_layers=depth, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in m.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and "norm" in name:
                p.copy_(1 + 0.1 * r)
            elif p.ndim == 1:
                p.copy_(0.1 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return m.eval()


def write_tiny_clip(path, words=("a", "photo", "of", "red", "blue", "green", "circle", "square", "cross", "left",
                                 "right", "above", "below", "and", "two", "three"), seed: int = 0):
    """A randomly initialised transformers CLIPModel + CLIPProcessor (word-level tokenizer, 32 px) saved to `path`
    (a stand-in for a local CLIP checkpoint; nothing downloaded). Returns `path`."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast
    vocab = ["<unk>", "<pad>", "<s>", "</s>", *words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", model_max_length=16)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=16, eos_token_id=3,
                                      bos_token_id=2, pad_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def write_tiny_geneval_models(root):
    """GenEval's official evaluator models, tiny and random, as local folders (nothing downloaded): Mask2Former
    (tiny Swin, COCO id2label; every query biased towards "dog" so some detections pass 0.3 and reach CLIP) at
    `root/m2f` and CLIP (word-level tokenizer over GenEval's colour words) at `root/clip`. Returns both paths."""
    from pathlib import Path

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPConfig, CLIPModel, Mask2FormerConfig, Mask2FormerForUniversalSegmentation,
                              PreTrainedTokenizerFast, SwinConfig)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    from sana_core.geneval.official import COCO_CLASSES, DETECTOR_NAMES
    from sana_core.geneval.world import COLORS
    root = Path(root)
    names = [DETECTOR_NAMES.get(c, c) for c in COCO_CLASSES]
    sw = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                    window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=sw, feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                            num_attention_heads=2, num_queries=8, num_labels=80, use_pretrained_backbone=False,
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    m2f = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():   # bias every query towards "dog" so some detections pass 0.3 and reach CLIP
        m2f.class_predictor.bias[names.index("dog")] += 12.0
    m2f.save_pretrained(root / "m2f")
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(root / "m2f")

    words = ["<unk>", "<pad>", "<s>", "</s>", "a", "photo", "of", "-", "colored", "object", *COLORS, "dog"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>", model_max_length=16).save_pretrained(root / "clip")
    ccfg = CLIPConfig(text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                       eos_token_id=3, bos_token_id=2, pad_token_id=1),
                      vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(1)
    CLIPModel(ccfg).save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32},
                          crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    return root / "m2f", root / "clip"
