"""Downstream records -> text-to-text examples, in the formats Clinical-T5's paper used.

Every example is a dict of strings: `inputs`, `targets` and `example_id` (MedNLI pairID, RadQA
qa id, CLIP `<doc_id>-<sentence index>`), RadQA examples also `answers` (the question's gold
answers as a JSON list, for evaluation). Inputs and answers pass through MIMIC-III DEID
placeholder replacement (`[**...**]` -> tags), as pretraining did, so fine-tuning sees the tags
the model was pretrained on.

- MedNLI: `mednli premise: {sentence1} hypothesis: {sentence2}` (each ending in "."),
  target the gold label.
- RadQA: `question: {question} context: {context}` within `RADQA_MAX_TOKENS`; a longer report is
  cut into word-aligned windows of the context that overlap by half, one example each; a window
  holding none of the answers (or an impossible question) has the target `NO_ANSWER`.
- CLIP: the words of the document around the sentence (as many as fit, centred on it), then
  ` ; ` and the sentence, within `CLIP_MAX_TOKENS`; target the sorted label names joined by
  ", ", or `CLIP_NONE`.

Token budgets count each word with the task's vocabulary (`count_tokens`, best wrapped in
`cached_counter`) and keep one token for EOS, so the inputs fit without seqio trimming them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from clinical_t5x.data import deid
from clinical_t5x.data.downstream import ClipDocument, NliPair, Question

NO_ANSWER = "no answer"
CLIP_NONE = "none"
CLIP_SEPARATOR = ", "
RADQA_MAX_TOKENS = 1024
CLIP_MAX_TOKENS = 512
# Feature lengths for the examples these functions make: RadQA and CLIP inputs fit by
# construction, MedNLI pairs are a few sentences; targets hold every label string and all but
# unusually long RadQA answers.
FEATURE_LENGTHS = {
    "mednli": {"inputs": 512, "targets": 16},
    "radqa": {"inputs": RADQA_MAX_TOKENS, "targets": 128},
    "clip": {"inputs": CLIP_MAX_TOKENS, "targets": 64},
}
FRACTION_SEED = "clinical_t5x.downstream.fractions/0"

TokenCounter = Callable[[str], int]
Record = TypeVar("Record")
_WORD = re.compile(r"\S+")


def _sentence(text: str) -> str:
    text = deid.replace_mimic3(text).strip()
    return text if text.endswith(".") else text + "."


def mednli_example(pair: NliPair) -> dict[str, str]:
    return {"inputs": f"mednli premise: {_sentence(pair.premise)} hypothesis: {_sentence(pair.hypothesis)}",
            "targets": pair.label, "example_id": pair.pair_id}


def cached_counter(count_tokens: TokenCounter) -> TokenCounter:
    """`count_tokens` remembering each word: clinical text repeats its words a lot (share one
    across a split's records)."""
    cache: dict[str, int] = {}

    def count(word: str) -> int:
        if word not in cache:
            cache[word] = count_tokens(word)
        return cache[word]
    return count


def _windows(counts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) of at most `budget` tokens covering all words, each starting
    about half a budget after the previous one (so every answer lies whole in some window)."""
    if not counts:
        return [(0, 0)]
    windows, start = [], 0
    while True:
        end, used = start, 0
        while end < len(counts) and (end == start or used + counts[end] <= budget):
            used += counts[end]
            end += 1
        windows.append((start, end))
        if end == len(counts):
            return windows
        step, advanced = max(1, budget // 2), 0
        next_start = start
        while next_start < end - 1 and advanced + counts[next_start] <= step:
            advanced += counts[next_start]
            next_start += 1
        start = max(next_start, start + 1)


def radqa_examples(question: Question, count_tokens: TokenCounter,
                   max_tokens: int = RADQA_MAX_TOKENS) -> list[dict[str, str]]:
    """One example per context window (one in all for a report that fits)."""
    context = deid.replace_mimic3(question.context)
    # Answer offsets move with the replacement before them; answers never straddle a placeholder.
    answers = [(len(deid.replace_mimic3(question.context[:a.start])), deid.replace_mimic3(a.text))
               for a in question.answers]
    prefix = f"question: {deid.replace_mimic3(question.question)} context: "
    budget = max_tokens - 1 - sum(map(count_tokens, prefix.split()))
    spans = [m.span() for m in _WORD.finditer(context)]
    gold = json.dumps([text for _, text in answers] or [NO_ANSWER])
    examples = []
    for first, last in _windows([count_tokens(context[s:e]) for s, e in spans], budget):
        begin, end = (spans[first][0], spans[last - 1][1]) if spans else (0, 0)
        target = next((text for start, text in answers if begin <= start and start + len(text) <= end),
                      NO_ANSWER)
        examples.append({"inputs": prefix + context[begin:end], "targets": target,
                         "example_id": question.qa_id, "answers": gold})
    return examples


def _centred(counts: Sequence[int], first: int, last: int, budget: int) -> tuple[int, int]:
    """The word range [lo, hi) holding [first, last) and, alternately left and right, as many
    neighbouring words as fit in `budget` tokens."""
    lo, hi, used = first, last, sum(counts[first:last])
    grew = True
    while grew:
        grew = False
        if lo > 0 and used + counts[lo - 1] <= budget:
            lo, used, grew = lo - 1, used + counts[lo - 1], True
        if hi < len(counts) and used + counts[hi] <= budget:
            used, hi, grew = used + counts[hi], hi + 1, True
    return lo, hi


def clip_examples(document: ClipDocument, count_tokens: TokenCounter,
                  max_tokens: int = CLIP_MAX_TOKENS) -> list[dict[str, str]]:
    """One example per sentence of the document."""
    sentences = [deid.replace_mimic3(s.text).split() for s in document.sentences]
    words = [word for sentence in sentences for word in sentence]
    counts = [count_tokens(word) for word in words]
    examples, first = [], 0
    for sentence, words_of in zip(document.sentences, sentences):
        last = first + len(words_of)
        suffix = " ; " + " ".join(words_of)
        budget = max_tokens - 1 - sum(map(count_tokens, suffix.split()))
        lo, hi = _centred(counts, first, last, budget) if budget >= sum(counts[first:last]) else (first, first)
        examples.append({"inputs": " ".join(words[lo:hi]) + suffix,
                         "targets": CLIP_SEPARATOR.join(sentence.labels) or CLIP_NONE,
                         "example_id": f"{sentence.doc_id}-{sentence.index}"})
        first = last
    return examples


def fraction_subset(records: Sequence[Record], percent: float, record_id: Callable[[Record], str]) -> list[Record]:
    """The first `percent`% (at least one) of the records in an order fixed by a keyed hash of
    their ids: deterministic, independent of file order, and nested (5% holds all of 1%)."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    keep = max(1, math.ceil(len(records) * percent / 100))
    ranked = sorted(range(len(records)), key=lambda i: hashlib.sha256(
        f"{FRACTION_SEED}/{record_id(records[i])}".encode()).digest())
    return [records[i] for i in sorted(ranked[:keep])]
