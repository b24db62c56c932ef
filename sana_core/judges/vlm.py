"""VLM judge: any transformers image-text-to-text model from a local folder, asked the paper's yes/no question.

SANA-1.5 (sana15-method.md §11, `tools/inference_scaling/nvila_sana_pick.py`) asks NVILA-Lite-2B-Verifier one image +
one text turn with `JUDGE_PROMPT` and reads the first generated step: the answer text ("yes"/"no") and the scores of
the token ids `tokenizer.encode("yes"/"no", add_special_tokens=False)[0]`. Here:

- the model and processor load with `AutoModelForImageTextToText` / `AutoProcessor.from_pretrained(path)` (no network:
  a local folder; NVILA itself needs `trust_remote_code` and transformers 4.46, so any HF-native VLM — LLaVA, SmolVLM,
  Idefics3, PaliGemma, Qwen2-VL… — stands in);
- the text turn is the processor's chat template applied to [image, JUDGE_PROMPT.format(prompt)] with the generation
  prompt appended (the processor expands the image placeholder);
- the first generated token's logits = the forward pass's logits at the last input position (greedy `generate` with
  `output_scores` returns exactly these as `scores[0]`; the test checks it). p_yes / p_no = softmax over the vocabulary
  at the "yes"/"no" ids (monotone in the logit, so the tournament's comparisons equal the paper's logprob ones);
  yes = the greedy first token is "yes". A first token that is neither yes nor no counts as "no" (the official
  script instead lets the *second* image of the pair win — order-dependent; we avoid that).
- each image is judged independently (batching only stacks independent single-image conversations of equal length).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .base import JUDGE_PROMPT, Judge, check_prompt, as_pil_list, count_flops


class VLMJudge(Judge):
    name = "vlm"

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
                 prompt_template: str = JUDGE_PROMPT):
        from transformers import AutoModelForImageTextToText, AutoProcessor
        if not Path(path).is_dir():
            raise FileNotFoundError(f"judge.path: {path} is not a folder")
        if "{prompt}" not in prompt_template:
            raise ValueError("judge.prompt_template: must contain '{prompt}'")
        if int(batch_size) < 1:
            raise ValueError(f"judge.batch_size: {batch_size} must be ≥ 1")
        self.path, self.device, self.batch_size, self.template = str(path), device, int(batch_size), prompt_template
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=getattr(torch, dtype)).to(device).eval()
        tok = self.processor.tokenizer
        tok.padding_side = "left"          # last position = first generated step for every row
        self.yes_id = tok.encode("yes", add_special_tokens=False)[0]
        self.no_id = tok.encode("no", add_special_tokens=False)[0]
        if self.yes_id == self.no_id:
            raise ValueError(f"judge: tokenizer at {path} maps 'yes' and 'no' to the same first id {self.yes_id}")

    def text(self, prompt: str) -> str:
        """The full text turn for one image (chat template with the generation prompt)."""
        msgs = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": self.template.format(prompt=prompt)}]}]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True)

    def inputs(self, prompt: str, images: Any) -> dict:
        pil = as_pil_list(images)
        enc = self.processor(images=pil, text=[self.text(prompt)] * len(pil), return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.no_grad()
    def first_token_logits(self, prompt: str, images: Any) -> torch.Tensor:
        """float32 [B, vocab]: logits of the first generated token for each image."""
        check_prompt(prompt)
        pil = as_pil_list(images)
        outs = []
        for i in range(0, len(pil), self.batch_size):
            out = self.model(**self.inputs(prompt, pil[i:i + self.batch_size]))
            outs.append(out.logits[:, -1].float().cpu())
        return torch.cat(outs)

    def decide(self, prompt: str, images: Any, metadata: Mapping | None = None):
        logits = self.first_token_logits(prompt, images)
        probs = torch.softmax(logits, -1)
        return logits.argmax(-1) == self.yes_id, probs[:, self.yes_id], probs[:, self.no_id]

    def flops_per_image(self, image_size: int = 64) -> int:
        import numpy as np
        img = np.full((1, image_size, image_size, 3), 128, np.uint8)
        enc = self.inputs("a photo of a red circle left of a blue square", img)
        return count_flops(lambda: self.model(**enc))
