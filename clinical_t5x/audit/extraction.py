"""Extraction: can the model write out a stretch of a note from the rest of it?

For each sampled note, a k-token stretch of its first chunk is masked as one span
(`<extra_id_0>`), the model decodes greedily, and the stretch counts as extracted when the k
tokens after the sentinel are exactly the hidden ones. The rate on training notes minus the
rate on validation notes is memorisation beyond what the model can guess from context (dates,
boilerplate and section headers are guessable in both).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SPAN_LENGTHS = (16, 32)


def masked_stretch(tokens: Sequence[int], k: int, window: int, rng: np.random.Generator, sentinel: int,
                   eos_id: int) -> tuple[list[int], list[int]] | None:
    """(inputs, hidden stretch) for one note: the first `window` tokens with k of them, at a
    random place with context on both sides, replaced by `sentinel`; None if too short."""
    window_tokens = list(tokens[:window])
    if len(window_tokens) < k + 2:
        return None
    at = int(rng.integers(1, len(window_tokens) - k))
    inputs = window_tokens[:at] + [sentinel] + window_tokens[at + k:] + [eos_id]
    return inputs, window_tokens[at:at + k]


def exact_match(generated: Sequence[int], hidden: Sequence[int], sentinel: int) -> bool:
    """Whether the generation is the sentinel followed by exactly the hidden tokens."""
    return list(generated[:1]) == [sentinel] and list(generated[1:1 + len(hidden)]) == list(hidden)


def rate_summary(train_hits: Sequence[bool], validation_hits: Sequence[bool]) -> dict:
    """Exact-match rates of both splits and their difference."""
    train_rate = float(np.mean(train_hits)) if len(train_hits) else float("nan")
    validation_rate = float(np.mean(validation_hits)) if len(validation_hits) else float("nan")
    return {"train_notes": len(train_hits), "validation_notes": len(validation_hits),
            "train_exact_match": round(train_rate, 4), "validation_exact_match": round(validation_rate, 4),
            "difference": round(train_rate - validation_rate, 4)}
