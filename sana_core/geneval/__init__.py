"""GenEval-Shapes: a synthetic world of coloured shapes with GenEval's prompts, layout and scoring (geneval.md §6).

Light re-exports only (the vocabulary); import the submodules for the rest:
`render` (scenes, degradations), `prompts` (grammar, metadata, ground-truth scenes, training captions), `splits`
(compositional held-out sets), `layout` (GenEval folder layout, prompt files), `dataset` (training pool builder),
`detect` / `evaluate` (the rule-based evaluator).
"""
from .world import BG, COLORS, NUMBERS, PALETTE, RELATIONS, SHAPES, WorldConfig, world_config

__all__ = ["BG", "COLORS", "NUMBERS", "PALETTE", "RELATIONS", "SHAPES", "WorldConfig", "world_config"]
