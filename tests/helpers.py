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
