"""DVC stage `data`: build the GenEval-Shapes training pool and prompt files into `<root>/data/shapes`
from the `data` section of params.yaml (keys: `sana_core.geneval.dataset.DEFAULT_DATA_CFG`).

`python -m flows.stages.data` in the project root runs it through `flows.stage_runner` (validated params.yaml,
metrics/data.json, MLflow); without a params.yaml it builds DEFAULT_DATA_CFG into ./data/shapes and prints the metrics.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from flows.stage_runner import main as run_stage_main
from sana_core.geneval.dataset import build_dataset, DEFAULT_DATA_CFG

OUT = Path("data") / "shapes"


def data(params: dict, root: Path, item: str | None = None) -> dict:
    """Build `root/data/shapes`; returns flat metrics (counts per split and per defect, fractions).
    (`item` only for the stage-runner signature; `data` has no foreach items.)"""
    if item is not None:
        raise ValueError(f"stage data takes no item, got {item!r}")
    cfg = (params or {}).get("data", {}) or {}
    stats = build_dataset(cfg, Path(root) / OUT)
    n = stats["n_train"]
    metrics = {"n_train": n, "n_eval_iid": stats["n_eval_iid"], "n_eval_comp": stats["n_eval_comp"],
               "n_calibration": stats["n_calibration"]}
    for d, c in stats["defects"].items():
        metrics[f"defect_{d}"] = c
    metrics["frac_clean"] = stats["defects"].get("none", 0) / n
    return metrics


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
