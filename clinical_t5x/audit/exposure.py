"""Canary exposure (Carlini et al. 2019, "The Secret Sharer") and its sampled estimator.

Exposure of a secret s among the space R is log2|R| - log2 rank(s), the rank taken by the
model's score (here the log-probability of `<extra_id_0> s <extra_id_1>` given the canary's
sentence with s masked). Ranking all 10^10 secrets is out of reach, so the rank is estimated
from m candidates drawn uniformly from R: with c of them scoring at least as well as s (ties
count half), the secret's rank among the m + 1 is c + 1, and

    exposure ~= -log2((c + 1) / (m + 1)),

which is unbiased for the fraction of R that outranks s up to the +1 correction. It resolves
exposures up to log2(m + 1) (13.3 bits for m = 10,000); a secret that no candidate beats is
reported at that cap, with the 95% interval's lower end stating what is certain. The interval
comes from the Clopper-Pearson interval of the fraction c/m.

A model that learned nothing ranks the secret uniformly: exposure is then 1/ln 2 = 1.44 bits on
average (median 1 bit), whatever |R| is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats

from clinical_t5x.data import canaries as canary_notes

MIN_CANDIDATES = 10_000
NO_LEARNING_MEAN = 1.0 / math.log(2.0)  # E[-log2 U], U uniform on (0, 1)
NO_LEARNING_MEDIAN = 1.0


@dataclasses.dataclass(frozen=True)
class Exposure:
    """The estimate for one canary; `better` counts candidates scoring >= the secret."""

    index: int
    repeats: int
    candidates: int
    better: float
    exposure: float
    ci95: tuple[float, float]
    capped: bool  # no candidate beat the secret: the estimate is the resolution limit

    def as_dict(self) -> dict:
        return {"canary": self.index, "repeats": self.repeats, "candidates": self.candidates,
                "better_candidates": self.better, "exposure_bits": round(self.exposure, 3),
                "ci95_bits": [round(v, 3) for v in self.ci95], "at_resolution_limit": self.capped}


def candidates_beating(secret_score: float, candidate_scores: np.ndarray) -> float:
    """How many candidates score above the secret, ties counted half."""
    scores = np.asarray(candidate_scores)
    return float(np.sum(scores > secret_score) + 0.5 * np.sum(scores == secret_score))


def estimate(index: int, repeats: int, secret_score: float, candidate_scores: np.ndarray,
             space_size: int) -> Exposure:
    """Exposure of one secret from its candidates' scores, with a 95% interval."""
    m = len(candidate_scores)
    better = candidates_beating(secret_score, candidate_scores)
    fraction = (better + 1.0) / (m + 1.0)
    lower_p, upper_p = _clopper_pearson(better, m)
    cap = math.log2(space_size)
    return Exposure(index, repeats, m, better, -math.log2(fraction),
                    (-math.log2(upper_p), min(cap, -math.log2(max(lower_p, 1.0 / space_size)))),
                    capped=better == 0)


def _clopper_pearson(successes: float, trials: int, level: float = 0.95) -> tuple[float, float]:
    alpha = 1.0 - level
    k = successes
    lower = 0.0 if k <= 0 else float(stats.beta.ppf(alpha / 2, k, trials - k + 1))
    upper = 1.0 if k >= trials else float(stats.beta.ppf(1 - alpha / 2, k + 1, trials - k))
    return lower, upper


def sample_candidates(secret: str, count: int, seed: int) -> list[str]:
    """`count` distinct secrets of R other than `secret`, drawn uniformly (by seed)."""
    if count < MIN_CANDIDATES:
        raise ValueError(f"exposure needs at least {MIN_CANDIDATES} candidates, got {count}")
    rng = np.random.default_rng([seed, 3])
    chosen: list[str] = []
    seen = {secret}
    while len(chosen) < count:
        for value in canary_notes.draw_secrets(rng, count - len(chosen)):
            text = canary_notes.format_secret(int(value))
            if text not in seen:
                seen.add(text)
                chosen.append(text)
    return chosen


def summary_by_repeats(results: Sequence[Exposure]) -> list[dict]:
    """Median and max exposure for each repeat count, in increasing repeats."""
    rows = []
    for repeats in sorted({r.repeats for r in results}):
        values = [r.exposure for r in results if r.repeats == repeats]
        rows.append({"repeats": repeats, "canaries": len(values), "median_bits": round(float(np.median(values)), 3),
                     "max_bits": round(max(values), 3),
                     "at_resolution_limit": sum(r.capped for r in results if r.repeats == repeats)})
    return rows
