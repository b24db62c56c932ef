"""The linear DiT: diffusers `SanaTransformer2DModel` profiles and SANA's weight init (sana15-method.md §3).

Profiles hold the model's constructor kwargs. `paper_1.6b` / `paper_4.8b` are SANA-1.5's `SanaMS_1600M_P1_D20` /
`SanaMS_4800M_P1_D60`: width 2240 = 70 linear heads × 32, cross-attention 20 × 112, GLUMBConv 5600 (mlp_ratio 2.5),
Gemma-2 captions (2304), DC-AE f32c32 latents, RMSNorm over all heads on q/k (`rms_norm_across_heads`), no positional
embedding (`interpolation_scale=None`). `tiny` is the CPU default (T6 of stack-notes §1 with the codec's 16 latent
channels and MiniLM's 384-d captions); `smoke` is for tests.

Init (`init=`):
- "sana": `SanaMS.initialize_weights` — xavier_uniform on every Linear with zero bias, the patch-embed conv initialised
  like a Linear, N(0, 0.02) on the timestep MLP, `t_block` (= `time_embed.linear`) and the caption MLP, and the caption
  RMSNorm weight 0.01 (`y_norm_scale_factor`). Nothing is zero-initialised. Convs of the Mix-FFN and the
  `scale_shift_table`s (randn/√D) keep their constructor init, as in SANA.
- "pixart": "sana" plus PixArt's zero-init of the cross-attention output projection and the final `proj_out`.
- "diffusers": torch default init as constructed by diffusers (caption_norm weight 1.0).
"""
from __future__ import annotations

import inspect

import torch
from diffusers import SanaTransformer2DModel

_COMMON = dict(mlp_ratio=2.5, patch_size=1, qk_norm="rms_norm_across_heads", interpolation_scale=None,
               attention_bias=False, norm_elementwise_affine=False, norm_eps=1e-6)

PROFILES: dict[str, dict] = {
    "smoke": dict(_COMMON, in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                  num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32,
                  caption_channels=384, sample_size=8),
    "tiny": dict(_COMMON, in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=32, num_layers=6,
                 num_cross_attention_heads=4, cross_attention_head_dim=32, cross_attention_dim=128,
                 caption_channels=384, sample_size=8),
    "paper_1.6b": dict(_COMMON, in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32,
                       num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
                       cross_attention_dim=2240, caption_channels=2304, sample_size=32),
}
PROFILES["paper_4.8b"] = dict(PROFILES["paper_1.6b"], num_layers=60)

INITS = ("sana", "pixart", "diffusers")
_MODEL_KEYS = frozenset(inspect.signature(SanaTransformer2DModel.__init__).parameters) - {"self"}


def resolve_config(cfg_or_profile: str | dict, **overrides) -> dict:
    """Profile name or dict (optional key "profile" + constructor kwargs) + overrides → full constructor kwargs.
    `num_layers: None` keeps the profile's depth (params.yaml `model.num_layers: null`). Unknown profile or key →
    ValueError naming it."""
    if isinstance(cfg_or_profile, str):
        cfg = {"profile": cfg_or_profile}
    elif isinstance(cfg_or_profile, dict):
        cfg = dict(cfg_or_profile)
    else:
        raise ValueError(f"model config must be a profile name or a dict, got {type(cfg_or_profile).__name__}")
    cfg.update(overrides)
    if "num_layers" in cfg and cfg["num_layers"] is None:
        del cfg["num_layers"]
    name = cfg.pop("profile", None)
    if name is not None and name not in PROFILES:
        raise ValueError(f"model.profile: unknown profile {name!r}; choose from {sorted(PROFILES)}")
    bad = sorted(set(cfg) - _MODEL_KEYS)
    if bad:
        raise ValueError(f"model: unknown key(s) {bad} for SanaTransformer2DModel")
    out = dict(PROFILES[name]) if name else {}
    out.update(cfg)
    if out.get("cross_attention_dim") is None:  # stack-notes §1 trap: no attn2/norm2 without it
        raise ValueError("model.cross_attention_dim: must be set (SanaTransformerBlock needs cross-attention)")
    return out


def sana_init_(model: SanaTransformer2DModel, zero_out: bool = False) -> SanaTransformer2DModel:
    """SANA's `initialize_weights` in place; `zero_out=True` adds PixArt's zero cross-attn out and proj_out."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    torch.nn.init.zeros_(mod.bias)
        w = model.patch_embed.proj.weight
        torch.nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if model.patch_embed.proj.bias is not None:
            torch.nn.init.zeros_(model.patch_embed.proj.bias)
        te = model.time_embed.emb.timestep_embedder
        for lin in (te.linear_1, te.linear_2, model.time_embed.linear,
                    model.caption_projection.linear_1, model.caption_projection.linear_2):
            torch.nn.init.normal_(lin.weight, std=0.02)
        model.caption_norm.weight.fill_(0.01)
        if zero_out:
            for b in model.transformer_blocks:
                torch.nn.init.zeros_(b.attn2.to_out[0].weight)
                torch.nn.init.zeros_(b.attn2.to_out[0].bias)
            torch.nn.init.zeros_(model.proj_out.weight)
            torch.nn.init.zeros_(model.proj_out.bias)
    return model


def build_transformer(cfg_or_profile: str | dict = "tiny", init: str = "sana", device: str | torch.device | None = None,
                      seed: int | None = None, **overrides) -> SanaTransformer2DModel:
    """Build a `SanaTransformer2DModel` from a profile/config. `seed` makes construction + init deterministic
    (global RNG forked, so the caller's RNG state is untouched). `device="meta"` builds without memory (param counts).
    A dict config may carry "init" and "seed" too (params.yaml `model:` section), taking precedence."""
    if isinstance(cfg_or_profile, dict):
        cfg_or_profile = dict(cfg_or_profile)
        init = cfg_or_profile.pop("init", init)
        seed = cfg_or_profile.pop("seed", seed)
    if init not in INITS:
        raise ValueError(f"model.init: unknown init {init!r}; choose from {list(INITS)}")
    kw = resolve_config(cfg_or_profile, **overrides)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        with dev:
            model = SanaTransformer2DModel(**kw)
        if dev.type != "meta" and init != "diffusers":
            sana_init_(model, zero_out=(init == "pixart"))
    return model


def param_count(model_or_profile: torch.nn.Module | str | dict) -> int:
    """Number of parameters; a profile/config is counted on the meta device (no memory)."""
    m = model_or_profile if isinstance(model_or_profile, torch.nn.Module) else build_transformer(
        model_or_profile, init="diffusers", device="meta")
    return sum(p.numel() for p in m.parameters())
