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
