"""Shared helpers for depth surgery on diffusers ``SanaTransformer2DModel`` (growth, pruning).

The one trap every surgery must avoid (stack-notes §2): after changing ``transformer_blocks`` the
config still says the old ``num_layers``; ``save_pretrained`` then writes a config that
``from_pretrained`` uses to build the *old* depth, silently leaving extra blocks random (or
dropping weights) with only a warning. :func:`with_blocks` always re-registers ``num_layers`` and
:func:`check_depth` is asserted before anything is saved.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Iterable

import torch

from .atomic import atomic_dir, write_text_atomic


def check_depth(model) -> int:
    """Return the depth; raise if ``len(transformer_blocks) != config.num_layers`` (the reload trap)."""
    n, cfg_n = len(model.transformer_blocks), int(model.config.num_layers)
    if n != cfg_n:
        raise ValueError(
            f"model has {n} transformer_blocks but config.num_layers={cfg_n}: call "
            "register_to_config(num_layers=...) after surgery, or from_pretrained will rebuild the wrong depth"
        )
    return n


def with_blocks(model, blocks: Iterable[torch.nn.Module]):
    """A deep copy of ``model`` (blocks excluded from the copy) whose blocks are ``blocks``, config re-registered.

    The source model is never modified: its non-block modules are deep-copied, and the caller is
    responsible for passing blocks that are not shared with the source (deep copies or new modules).
    """
    old = model.transformer_blocks
    model.transformer_blocks = torch.nn.ModuleList()  # keep deepcopy from copying the old blocks
    try:
        new = copy.deepcopy(model)
    finally:
        model.transformer_blocks = old
    new.transformer_blocks = torch.nn.ModuleList(list(blocks))
    new.register_to_config(num_layers=len(new.transformer_blocks))
    assert len(new.transformer_blocks) == new.config.num_layers
    return new


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write JSON to ``path`` via a temp file + rename (never a half-written file)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def save_model(model, out_dir: str | os.PathLike, extra_json: dict[str, object] | None = None) -> Path:
    """``save_pretrained`` into ``out_dir`` atomically (temp folder + rename), plus optional JSON side files.

    ``extra_json`` maps file names (e.g. ``"growth_layout.json"``) to JSON-serialisable objects.
    Refuses (ValueError) a model whose block count disagrees with its config, before writing anything.
    """
    check_depth(model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        for name, obj in (extra_json or {}).items():
            write_json_atomic(tmp / name, obj)

    return atomic_dir(out_dir, write)
