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
