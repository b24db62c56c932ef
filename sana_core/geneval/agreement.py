"""Agreement of two GenEval `results.jsonl` files on the same images (ours vs the official tool's, or two runs).

Images are matched by `<prompt folder>/<file name>` (e.g. `00042/00003.png`), so the two files may come from
different absolute paths and any record order (GenEval writes in `os.listdir` order). Both files must cover the same
images (ValueError naming the file and how many images it misses). Reported: per-image agreement of `correct`
overall and per task, each file's task scores and overall (GenEval's summary: mean of the task means), and every
disagreeing image with both reasons.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .evaluate import TASKS, summary


def _read(path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    df = pd.read_json(path, orient="records", lines=True)
    for col in ("filename", "tag", "correct"):
        if col not in df.columns:
            raise ValueError(f"{path}: no '{col}' column (not a GenEval results.jsonl)")
    df["key"] = [f"{Path(f).parent.parent.name}/{Path(f).name}" for f in df["filename"]]
    dup = df["key"][df["key"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: image {dup.iloc[0]} appears more than once")
    for col in ("prompt", "reason"):
        if col not in df.columns:
            df[col] = ""
    return df.set_index("key")


def compare_results(a, b) -> dict:
    da, db = _read(a), _read(b)
    for x, y, path in ((da, db, b), (db, da, a)):
        missing = sorted(set(x.index) - set(y.index))
        if missing:
            raise ValueError(f"{path}: missing {len(missing)} image(s) of the other file, e.g. {missing[:3]}")
    db = db.loc[da.index]
    bad_tag = da.index[da["tag"] != db["tag"]]
    if len(bad_tag):
        k = bad_tag[0]
        raise ValueError(f"{b}: image {k} has tag {db['tag'][k]!r}, {a} says {da['tag'][k]!r}")
    same = da["correct"].astype(bool) == db["correct"].astype(bool)
    tasks = {}
    for t in [t for t in TASKS if t in set(da["tag"])]:
        m = da["tag"] == t
        tasks[t] = {"n": int(m.sum()), "agreement": float(same[m].mean()),
                    "score_a": float(da["correct"][m].mean()), "score_b": float(db["correct"][m].mean())}
    diff = [{"key": k, "tag": da["tag"][k], "prompt": da["prompt"][k], "a": bool(da["correct"][k]),
             "b": bool(db["correct"][k]), "reason_a": da["reason"][k], "reason_b": db["reason"][k]}
            for k in da.index[~same]]
    return {"a": str(a), "b": str(b), "n_images": int(len(da)), "agreement": float(same.mean()),
            "overall_a": summary(da.reset_index())["overall"], "overall_b": summary(db.reset_index())["overall"],
            "tasks": tasks, "disagreements": sorted(diff, key=lambda d: d["key"])}


def format_report(rep: dict) -> str:
    lines = [f"{'task':<14} {'n':>6} {'agree':>7} {'score A':>8} {'score B':>8}"]
    for t, r in rep["tasks"].items():
        lines.append(f"{t:<14} {r['n']:>6} {r['agreement']:>7.4f} {r['score_a']:>8.4f} {r['score_b']:>8.4f}")
    lines.append(f"{'overall':<14} {rep['n_images']:>6} {rep['agreement']:>7.4f} {rep['overall_a']:>8.4f} "
                 f"{rep['overall_b']:>8.4f}")
    lines.append(f"A = {rep['a']}\nB = {rep['b']}\n{len(rep['disagreements'])} image(s) disagree")
    return "\n".join(lines)
