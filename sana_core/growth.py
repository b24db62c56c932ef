"""Depth growth of a ``SanaTransformer2DModel`` (SANA-1.5 §2.2, App. C; sana15-method.md §8).

Three initialisations from the paper, for growing N pre-trained blocks to ``target_depth`` blocks:

* ``partial_preservation`` (the one SANA-1.5 adopted): keep the first ``N - drop_last`` pre-trained
  blocks (the paper drops the last two, 20 → 18 kept, "to enhance the learning of newly added
  blocks"), then append new blocks up to ``target_depth``. Each new block has its self-attention
  output projection (``attn1.to_out[0]`` weight + bias), cross-attention output projection
  (``attn2.to_out[0]`` weight + bias; cross-attention has no gate, so this is required) and FFN
  point-wise conv (``ff.conv_point.weight``, no bias) set to zero, so it is exactly the identity at
  init and the grown model computes exactly what the truncated source computes. The paper says new
  blocks are drawn from N(0, σ²) "with special handling of key components"; we initialise their
  other parameters like SANA's ``initialize_weights`` (xavier-uniform Linear weights, zero Linear
  biases; PyTorch's default for the FFN convs, which SANA does not touch; RMSNorm weights 1;
  ``scale_shift_table`` ~ N(0, 1/D)), drawn from a generator seeded with ``seed`` (independent of
  the global RNG). Non-block parameters (patch/time/caption embedders, caption norm, final layer,
  top-level ``scale_shift_table``) are copied from the source — the paper leaves this unstated.
* ``cyclic``: block i ← pre-trained block (i mod N).
* ``block_replication``: each pre-trained block repeated r = target/N times in place,
  θ_(r·i+j) = θ^pre_i (the paper's "r = M/N" is a typo for (N+M)/N); target must be a multiple of N.

The paper reports NaN losses for the two replication strategies (Fig. 7); they are provided for
the comparison. Replicated blocks are independent deep copies (no parameter sharing).

:func:`grow` returns a new model (the source is untouched) and a layout: for each new block index,
the source block index it was copied from, or ``"new"``. Callers save it to JSON next to the model
(:func:`sana_core.surgery_io.save_model` with ``extra_json={"growth_layout.json": ...}``).
"""
from __future__ import annotations

import copy
import math

import torch
from diffusers.models.transformers.sana_transformer import SanaTransformerBlock

from .surgery_io import check_depth, with_blocks

STRATEGIES = ("partial_preservation", "cyclic", "block_replication")
PAPER_DROP_LAST = 2  # SANA-1.5 keeps blocks 0-17 of the 20-block model


def _resolve_drop_last(n: int, strategy: str, keep: int | None, drop_last: int | None) -> int:
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 < keep <= n:
            raise ValueError(f"grow.keep must be an int in [1, {n}] (source depth {n}), got {keep!r}")
        if drop_last is not None and drop_last != n - keep:
            raise ValueError(f"grow.keep={keep} and grow.drop_last={drop_last} disagree for source depth {n}")
        drop_last = n - keep
    if drop_last is None:
        return PAPER_DROP_LAST if strategy == "partial_preservation" else 0
    if isinstance(drop_last, bool) or not isinstance(drop_last, int) or drop_last < 0:
        raise ValueError(f"grow.drop_last must be a non-negative int, got {drop_last!r}")
    if drop_last >= n:
        raise ValueError(f"grow.drop_last={drop_last} must be < source depth {n} (at least one block must be kept)")
    if strategy != "partial_preservation" and drop_last:
        raise ValueError(f"grow.drop_last={drop_last}: only partial_preservation drops blocks; "
                         f"{strategy} replicates all {n} source blocks (use 0)")
    return drop_last


def growth_args(cfg: dict) -> dict:
    """params `grow` → sana_core.growth arguments: `drop_last` applies to partial_preservation only (the replication
    strategies keep every source block). Used by the grow stage and by the params check."""
    pp = cfg["strategy"] == "partial_preservation"
    return {"target_depth": cfg["target_depth"], "strategy": cfg["strategy"], "drop_last": cfg["drop_last"] if pp else 0}


def growth_layout(source_depth: int, target_depth: int, strategy: str,
                  keep: int | None = None, drop_last: int | None = None) -> list:
    """Validate the growth parameters and return the layout (no model needed, no compute).

    Raises ValueError naming ``grow.strategy``, ``grow.target_depth``, ``grow.drop_last`` or ``grow.keep``.
    """
    n = source_depth
    if strategy not in STRATEGIES:
        raise ValueError(f"grow.strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if isinstance(target_depth, bool) or not isinstance(target_depth, int):
        raise ValueError(f"grow.target_depth must be an int, got {target_depth!r}")
    if target_depth <= n:
        raise ValueError(f"grow.target_depth={target_depth} must exceed the source depth {n} (growth only)")
    k = _resolve_drop_last(n, strategy, keep, drop_last)
    if strategy == "partial_preservation":
        return list(range(n - k)) + ["new"] * (target_depth - (n - k))
    if strategy == "cyclic":
        return [i % n for i in range(target_depth)]
    if target_depth % n:
        raise ValueError(f"grow.target_depth={target_depth} must be a multiple of the source depth {n} "
                         "for block_replication")
    r = target_depth // n
    return [i for i in range(n) for _ in range(r)]


def new_block_like(config) -> SanaTransformerBlock:
    """A fresh ``SanaTransformerBlock`` with the model config's shapes (stack-notes §2)."""
    c = config
    return SanaTransformerBlock(
        c.num_attention_heads * c.attention_head_dim, c.num_attention_heads, c.attention_head_dim,
        dropout=c.dropout, num_cross_attention_heads=c.num_cross_attention_heads,
        cross_attention_head_dim=c.cross_attention_head_dim, cross_attention_dim=c.cross_attention_dim,
        attention_bias=c.attention_bias, norm_elementwise_affine=c.norm_elementwise_affine, norm_eps=c.norm_eps,
        mlp_ratio=c.mlp_ratio, qk_norm=c.qk_norm)


@torch.no_grad()
def init_identity_block_(block: SanaTransformerBlock, generator: torch.Generator) -> SanaTransformerBlock:
    """SANA-style init of every parameter from ``generator``, then zero the three residual outputs.

    Afterwards ``block(x, ...) == x`` exactly: attn1 and attn2 outputs are 0 (zero weight and bias),
    the FFN output is 0 (zero point conv, no bias), and x + 0 == x in floating point.
    """
    g = generator
    done = set()
    for mod in block.modules():
        if isinstance(mod, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(mod.weight, generator=g)
            if mod.bias is not None:
                torch.nn.init.zeros_(mod.bias)
        elif isinstance(mod, torch.nn.Conv2d):  # PyTorch default (what SANA leaves in place)
            torch.nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5), generator=g)
            if mod.bias is not None:
                fan_in = mod.weight[0].numel()
                torch.nn.init.uniform_(mod.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=g)
        elif hasattr(mod, "weight") and isinstance(mod.weight, torch.nn.Parameter):  # RMSNorm / affine norms
            torch.nn.init.ones_(mod.weight)
            if getattr(mod, "bias", None) is not None:
                torch.nn.init.zeros_(mod.bias)
        else:
            continue
        done.update(id(p) for p in mod.parameters(recurse=False))
    d = block.scale_shift_table.shape[-1]
    block.scale_shift_table.copy_(torch.randn(block.scale_shift_table.shape, generator=g) / d**0.5)
    done.add(id(block.scale_shift_table))
    missed = [n for n, p in block.named_parameters() if id(p) not in done]
    if missed:  # a diffusers change added parameters we do not know how to initialise
        raise RuntimeError(f"init_identity_block_: uninitialised parameters {missed}")
    for lin in (block.attn1.to_out[0], block.attn2.to_out[0]):
        lin.weight.zero_()
        lin.bias.zero_()
    block.ff.conv_point.weight.zero_()
    if block.ff.conv_point.bias is not None:
        block.ff.conv_point.bias.zero_()
    return block


def grow(model, target_depth: int, strategy: str = "partial_preservation", keep: int | None = None,
         drop_last: int | None = None, seed: int = 0):
    """Grow ``model`` to ``target_depth`` blocks; returns ``(new_model, layout)``. The source is untouched.

    ``drop_last`` (or equivalently ``keep = N - drop_last``) applies to ``partial_preservation`` only;
    its default is the paper's 2. Validation happens before any copy or compute (ValueError naming
    ``grow.strategy`` / ``grow.target_depth`` / ``grow.drop_last`` / ``grow.keep``).
    """
    n = check_depth(model)
    layout = growth_layout(n, target_depth, strategy, keep=keep, drop_last=drop_last)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"grow.seed must be an int, got {seed!r}")
    ref = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for src in layout:
        if src == "new":
            with torch.random.fork_rng(devices=[]):  # block construction draws from the global RNG
                blk = new_block_like(model.config)
            blk = init_identity_block_(blk, gen).to(device=ref.device, dtype=ref.dtype)
        else:
            blk = copy.deepcopy(model.transformer_blocks[src])
        blocks.append(blk)
    new = with_blocks(model, blocks)
    new.train(model.training)
    return new, layout
