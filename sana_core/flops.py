"""Training-compute accounting (later stages compare models at equal FLOPs).

Forward FLOPs are measured once with ``torch.utils.flop_counter.FlopCounterMode`` at the training shapes; a
training step is counted as 3 × forward (forward + backward ≈ 2 × forward). We do not use FlopCounter's own
backward count because it overcounts depthwise ``convolution_backward`` (ignores groups; stack-notes §4).
Element-wise ops (norms, activations, modulation) are not counted, as usual for FLOP budgets.
"""
from __future__ import annotations

import torch
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FLOPS_FACTOR = 3


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_flop_count(q, k, v)


# FlopCounterMode has formulas for the CUDA SDPA kernels only; the CPU flash kernel (used by the masked
# cross-attention here) would count 0 without this.
_CUSTOM = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _CUSTOM[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


@torch.no_grad()
def forward_flops_per_sample(model: torch.nn.Module, latent_shape, text_len: int, *, batch: int = 2,
                             caption_channels: int | None = None) -> float:
    """FLOPs of one transformer forward per sample for latents ``latent_shape`` = (C, H, W) and ``text_len``
    caption tokens (all valid). Measured on ``batch`` samples and divided (FLOPs are linear in the batch)."""
    c, h, w = (int(v) for v in latent_shape)
    cfg = model.config
    cap = int(caption_channels if caption_channels is not None else cfg.caption_channels)
    p = next(model.parameters())
    x = torch.zeros(batch, c, h, w, dtype=p.dtype, device=p.device)
    emb = torch.zeros(batch, int(text_len), cap, dtype=p.dtype, device=p.device)
    mask = torch.ones(batch, int(text_len), dtype=torch.long, device=p.device)
    t = torch.full((batch,), 500.0, dtype=p.dtype, device=p.device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as fc:
            model(x, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t, return_dict=False)
    finally:
        model.train(was_training)
    return fc.get_total_flops() / batch


def train_flops(fwd_flops_per_sample: float, samples: int) -> float:
    """Training FLOPs = 3 × forward FLOPs per sample × samples seen."""
    return float(TRAIN_FLOPS_FACTOR * fwd_flops_per_sample * samples)
