"""DVC stage `data`: the dataset every later stage reads through the data seam (sana_core.data, docs/data.md).

- `data.source: shapes` — the GenEval-Shapes world (sana_core.geneval.dataset.build_dataset: the world's keys of
  `data`) rendered and written as a standard dataset into `<root>/data/shapes` (sana_core.data.shapes.write_shapes;
  `data.format`: an image folder with metadata.jsonl, or webdataset shards) with its prompt files (eval_iid,
  eval_comp, calibration, world.json). Metrics: counts per split and per defect, fraction clean.
- any other source (`imagefolder`, `webdataset`, `hf` at `data.path`): nothing to materialise — the dataset is read
  where it is by stage encode (whose DVC dependency it is). The stage opens it (errors name data.source /
  data.path / the option before any image is decoded) and writes `data/shapes/source.json` (source, path, record
  count when the reader knows it) and `data/shapes/eval_iid.jsonl` = GenEval's own 553 prompts (the geneval stage
  scores them with the official evaluator, geneval.detector / geneval.clip). Metrics: the record count.

`python -m flows.stages.data` in the project root runs it through `flows.stage_runner` (validated params.yaml,
metrics/data.json, MLflow); without a params.yaml it builds DEFAULT_DATA_CFG into ./data/shapes and prints the metrics.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.stage_runner import main as run_stage_main
from sana_core.atomic import atomic_dir
from sana_core.data import open_source
from sana_core.data.shapes import write_shapes
from sana_core.geneval.dataset import DEFAULT_DATA_CFG

OUT = Path("data") / "shapes"
SHARD_SIZE = 1000   # records per tar shard when the shapes world is written as webdataset


def data(params: dict, root: Path, item: str | None = None) -> dict:
    """Write `root/data/shapes`; returns flat metrics. (`item` only for the stage-runner signature; `data` has no
    foreach items.)"""
    if item is not None:
        raise ValueError(f"stage data takes no item, got {item!r}")
    cfg = dict((params or {}).get("data", {}) or {})
    source = cfg.get("source", "shapes")
    if source != "shapes":
        return _external(cfg, Path(root))
    world = {k: v for k, v in cfg.items() if k in DEFAULT_DATA_CFG}
    stats = write_shapes(world, Path(root) / OUT, format=cfg.get("format", "imagefolder"), shard_size=SHARD_SIZE)
    n = stats["n_train"]
    metrics = {"n_train": n, "n_eval_iid": stats["n_eval_iid"], "n_eval_comp": stats["n_eval_comp"],
               "n_calibration": stats["n_calibration"]}
    for d, c in stats["defects"].items():
        metrics[f"defect_{d}"] = c
    metrics["frac_clean"] = stats["defects"].get("none", 0) / n
    return metrics


def _external(cfg: dict, root: Path) -> dict:
    """A dataset the user brings: check it opens, record what it is."""
    import inspect
    from sana_core.data import SOURCES
    path = cfg.get("path")
    if path is not None and not Path(path).is_absolute():
        path = str(root / path)
    if cfg["source"] not in SOURCES:
        raise ValueError(f"data.source: unknown source {cfg['source']!r}; choose from {sorted(SOURCES)}")
    opts = set(inspect.signature(SOURCES[cfg["source"]]).parameters) - {"path"}
    src = open_source(cfg["source"], path, **{k: cfg[k] for k in opts if k in cfg})
    try:
        n = len(src)
    except TypeError:
        n = None
    info = {"source": cfg["source"], "path": cfg.get("path"), "n_records": n}
    metas = real_geneval_prompts()

    def write(tmp: Path):
        (tmp / "source.json").write_text(json.dumps(info, indent=1))
        (tmp / "eval_iid.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metas))

    atomic_dir(root / OUT, write)
    return {"n_records": n if n is not None else -1, "n_eval_iid": len(metas)}


def real_geneval_prompts() -> list[dict]:
    """GenEval's own 553 evaluation prompts (evaluation_metadata.jsonl: its generator over the 80 COCO classes,
    seed 43 — sana_core.geneval.prompts.generate_suite reproduces the file byte for byte)."""
    import numpy as np
    from sana_core.geneval.official import COCO_CLASSES
    from sana_core.geneval.prompts import generate_suite
    return generate_suite(list(COCO_CLASSES), np.random.default_rng(43))


def main() -> int:
    """Standalone run without the stage wrapper: ./params.yaml's `data` section, or DEFAULT_DATA_CFG if absent."""
    root = Path.cwd()
    p = root / "params.yaml"
    if p.is_file():
        import yaml
        with open(p) as f:
            params = yaml.safe_load(f) or {}
        if not isinstance(params, dict):
            raise ValueError(f"{p}: expected a mapping at the top level")
    else:
        params = {"data": DEFAULT_DATA_CFG}
    print(json.dumps(data(params, root), indent=2))
    return 0


if __name__ == "__main__":
    if (Path.cwd() / "params.yaml").is_file():       # the project: validated params, metrics/data.json, MLflow
        run_stage_main("data", data)
        sys.exit(0)
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as e:
        print(f"data: error: {e}", file=sys.stderr)
        sys.exit(2)
