"""Membership inference on notes (Mireshghallah et al. 2022): loss and likelihood-ratio attacks.

Each note is scored by the mean log-probability per target token of its span-corrupted chunks
(the training objective itself), over several masks drawn with a fixed noise seed, so a score
is reproducible and does not hinge on one lucky mask. The loss attack calls a note a member
when that score is high; the likelihood-ratio attack subtracts the same score under a
reference model that never saw the notes, which cancels how easy a note is in general and is
why it is far stronger (AUC 0.90 against 0.66 in the paper). Members are training notes,
non-members validation notes, which belong to held-out patients by prepare's split; both
samples have the same size, so an AUC of 0.5 is chance.

Reported per attack: ROC-AUC with a bootstrap 95% interval, and the true-positive rate at 1%
and 0.1% false-positive rate (the regime that matters for a single patient: few false alarms).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np
from scipy import stats

from clinical_t5x.text import span_corruption

BOOTSTRAP_ROUNDS = 1000
LOW_FPRS = (0.01, 0.001)


def roc_auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """P(member score > non-member score), ties half: the Mann-Whitney form of ROC-AUC."""
    members, nonmembers = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    ranks = stats.rankdata(np.concatenate([members, nonmembers]))
    n1, n0 = len(members), len(nonmembers)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(members: Sequence[float], nonmembers: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every threshold, from (0, 0) to (1, 1)."""
    members, nonmembers = np.sort(members), np.sort(nonmembers)
    thresholds = np.unique(np.concatenate([members, nonmembers]))[::-1]

    def above(sample: np.ndarray) -> np.ndarray:  # share of `sample` >= each threshold
        return (len(sample) - np.searchsorted(sample, thresholds, side="left")) / len(sample)

    tpr, fpr = above(members), above(nonmembers)
    return np.array([0.0, *fpr]), np.array([0.0, *tpr])


def tpr_at_fpr(members: Sequence[float], nonmembers: Sequence[float], fpr: float) -> float:
    """The largest true-positive rate over thresholds whose false-positive rate is <= `fpr`."""
    fprs, tprs = roc_curve(members, nonmembers)
    return float(tprs[fprs <= fpr].max())


def bootstrap_auc(members: Sequence[float], nonmembers: Sequence[float], seed: int,
                  rounds: int = BOOTSTRAP_ROUNDS) -> tuple[float, float]:
    """95% percentile interval of the AUC, both samples resampled with replacement."""
    members, nonmembers = np.asarray(members), np.asarray(nonmembers)
    rng = np.random.default_rng([seed, 4])
    aucs = [roc_auc(rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers)))
            for _ in range(rounds)]
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def attack_summary(members: Sequence[float], nonmembers: Sequence[float], seed: int) -> dict:
    """AUC, its bootstrap interval and the low-FPR true-positive rates of one attack."""
    low, high = bootstrap_auc(members, nonmembers, seed)
    summary = {"members": len(members), "nonmembers": len(nonmembers),
               "auc": round(roc_auc(members, nonmembers), 4), "auc_ci95": [round(low, 4), round(high, 4)]}
    for fpr in LOW_FPRS:
        summary[f"tpr_at_{fpr:g}_fpr"] = round(tpr_at_fpr(members, nonmembers, fpr), 4)
    return summary


def mean_by(keys: Sequence[Hashable], values: Sequence[float]) -> dict[Hashable, float]:
    """Mean value per key (e.g. per patient: the mean of the patient's note scores)."""
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for key, value in zip(keys, values):
        groups[key].append(value)
    return {key: float(np.mean(group)) for key, group in groups.items()}


def note_examples(tokens: Sequence[int], chunk_length: int, max_chunks: int, masks: int, seed: int,
                  stream: int, sentinels: Sequence[int], eos_id: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) pairs, EOS appended, of a note's first `max_chunks` chunks, each
    span-corrupted `masks` times by the task's own masking (the same for a given seed and
    stream). A note shorter than one chunk is one shorter chunk."""
    tokens = list(tokens)
    if len(tokens) < 2:
        return []
    full = [tokens[i:i + chunk_length] for i in range(0, len(tokens) - chunk_length + 1, chunk_length)]
    rows = full[:max_chunks] or [tokens]
    inputs, targets = span_corruption.corrupt_matrix(np.array(rows * masks), seed, stream, sentinels)
    return [(list(map(int, i)) + [eos_id], list(map(int, t)) + [eos_id]) for i, t in zip(inputs, targets)]
