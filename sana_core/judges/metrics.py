"""Yes/no quality of a judge against the evaluator's labels: accuracy, balanced accuracy (a weak model's images are
mostly "no", so plain accuracy is flattered by the majority class), TPR/TNR, label balance and rank AUC."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for 0/1 `labels` (Mann–Whitney rank sum); NaN when one class is absent."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def binary_metrics(pred, label, score=None) -> dict:
    """accuracy, balanced accuracy, TPR, TNR, label balance (+ AUC from `score`) of yes/no predictions."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    if len(label) == 0:
        return {}
    tpr = float(pred[label].mean()) if label.any() else float("nan")
    tnr = float((~pred[~label]).mean()) if (~label).any() else float("nan")
    rates = [r for r in (tpr, tnr) if not math.isnan(r)]
    pos = float(label.mean())
    out = {"acc": float((pred == label).mean()), "balanced_acc": float(np.mean(rates)), "tpr": tpr, "tnr": tnr,
           "pos_rate": pos, "pred_pos_rate": float(pred.mean()), "majority_acc": max(pos, 1 - pos), "n": int(len(label))}
    if score is not None:
        out["auc"] = auc(np.asarray(score, float), label.astype(int))
    return out


def within_group_auc(scores, labels, groups) -> tuple[float, int]:
    """Mean AUC over the groups (prompts) holding both classes, and how many do: what a best-of-N knockout uses —
    ranking one prompt's candidates. A pooled AUC can be high from ranking the prompts alone (a prior over prompt
    types) while the candidates of each prompt are ranked at random. (NaN, 0) when no group has both classes."""
    scores, labels, groups = np.asarray(scores, float), np.asarray(labels, int), np.asarray(groups)
    vals = [auc(scores[groups == g], labels[groups == g]) for g in dict.fromkeys(groups.tolist())]
    vals = [v for v in vals if not math.isnan(v)]
    return (float(np.mean(vals)) if vals else float("nan")), len(vals)
