"""The paper's components at toy width for `profiles/paper_smoke.yaml`, built locally (nothing downloaded):

    .venv/bin/python bench/paper_smoke_components.py [ROOT]     # → ROOT/components/{tiny-gemma2,tiny-dcae-f32c32}

- `tiny-gemma2`: a random 2-layer `Gemma2Model` (hidden 384 = the smoke DiT's caption_channels) + a word-level fast
  tokenizer that adds `<bos>`, trained on SANA's complex human instruction and the GenEval-Shapes vocabulary, so the
  CHI path (sana_core/text.py) runs as in the paper profile.
- `tiny-dcae-f32c32`: a random `AutoencoderDC` with the paper's geometry — 32x down-sampling, 32 latent channels
  (6 ResBlock stages of 8-32 channels): a 64 px image → a 32×2×2 latent.
The profile names these folders relative to the DVC root (the stages run there).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GEMMA = Path("components") / "tiny-gemma2"
DCAE = Path("components") / "tiny-dcae-f32c32"


def build_tiny_gemma2(out: Path, extra_text: list[str] = ()) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    from sana_core.geneval.world import COLORS, SHAPES
    from sana_core.text import default_chi

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = [f"{w} {w}s {w}es" for w in (*SHAPES, *COLORS)]  # (plural forms that do not exist are harmless)
    corpus = default_chi() + words + list(extra_text) + [
        "a photo of an the and one two three four five six left right above below of to on under"]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    cfg = Gemma2Config(vocab_size=fast.vocab_size, hidden_size=384, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0, bos_token_id=2,
                       eos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Gemma2Model(cfg).save_pretrained(out)
    return out


def build_tiny_dcae_f32(out: Path) -> Path:
    from sana_core.latents import _dc, Codec
    from diffusers import AutoencoderDC

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderDC(**_dc((8, 8, 16, 16, 32, 32), latent=32))
    Codec(vae.eval(), name="tiny-dcae-f32c32").save(out)
    return out


def build(root: Path) -> tuple[Path, Path]:
    return build_tiny_gemma2(Path(root) / GEMMA), build_tiny_dcae_f32(Path(root) / DCAE)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT):
        print(p)
