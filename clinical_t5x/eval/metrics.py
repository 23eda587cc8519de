"""Metrics of the downstream benchmarks, computed from decoded text, in percent (0-100).

seqio-style: `fn(targets, predictions) -> {name: value}`, so the same functions serve as the
SeqIO tasks' `metric_fns` (t5x) and in the built-in engine. Imports no TensorFlow.

- MedNLI (`mednli`): accuracy and macro-F1 over the three labels.
- RadQA (`radqa`, `squad_v2`): SQuAD 2.0's official rules: answers normalised (lower case,
  punctuation and the articles a/an/the removed, whitespace collapsed), exact match and token
  F1 taking the best gold answer, a question without answers scored against the empty answer
  (`NO_ANSWER` predicted = the empty answer); overall, on has-answer and on no-answer questions
  (a group with no questions is left out, as the official script does). `radqa_windows` first
  keeps one window per question (`best_window`).
- CLIP (`clip`): macro-F1 and micro-F1 over the seven labels, and F1 per label.
Macro averages run over the labels that some target or prediction holds (as scikit-learn's
`f1_score` does for single-label data): a label absent from a small evaluation set neither
lifts nor sinks the average, and has no per-label entry. With nothing to find and nothing
claimed at all, F1 is 100.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clinical_t5x.data.downstream import CLIP_LABELS, NLI_LABELS
from clinical_t5x.data.downstream_examples import CLIP_NONE, CLIP_SEPARATOR, NO_ANSWER

Metrics = dict[str, float]
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 100.0 if tp + fp + fn == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)


def _label_f1s(gold: Sequence[set[str]], predicted: Sequence[set[str]], labels: Sequence[str]
               ) -> tuple[dict[str, float], float]:
    """F1 per label held by some target or prediction, and micro-F1, from per-example label sets."""
    counts = {label: [0, 0, 0] for label in labels}  # tp, fp, fn
    for g, p in zip(gold, predicted, strict=True):
        for label in labels:
            if label in p:
                counts[label][0 if label in g else 1] += 1
            elif label in g:
                counts[label][2] += 1
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {label: _f1(*c) for label, c in counts.items() if any(c)}, _f1(*totals)


def _macro(f1s: Mapping[str, float]) -> float:
    return sum(f1s.values()) / len(f1s) if f1s else 100.0


def strip_text(output: str, example: Any = None, is_target: bool = False) -> str:
    """The tasks' postprocess_fn for labels: decoded text without surrounding space."""
    return output.strip()


def mednli(targets: Sequence[str], predictions: Sequence[str]) -> Metrics:
    """Accuracy and macro-F1 (a prediction that is not a label is simply wrong)."""
    gold = [{t.strip()} for t in targets]
    predicted = [{p.strip()} for p in predictions]
    f1s, _ = _label_f1s(gold, predicted, NLI_LABELS)
    correct = sum(g == p for g, p in zip(gold, predicted))
    return {"accuracy": 100.0 * correct / max(1, len(gold)), "macro_f1": _macro(f1s)}


def clip_labels(text: str) -> set[str]:
    """The label set a CLIP target or prediction names (`none`, unknown names: nothing)."""
    return {name.strip() for name in text.split(CLIP_SEPARATOR.strip())} & set(CLIP_LABELS)


def clip(targets: Sequence[str], predictions: Sequence[str]) -> Metrics:
    f1s, micro = _label_f1s([clip_labels(t) for t in targets], [clip_labels(p) for p in predictions],
                            CLIP_LABELS)
    return {"macro_f1": _macro(f1s), "micro_f1": micro, **{f"f1/{label}": f for label, f in f1s.items()}}


def normalize_answer(text: str) -> str:
    """SQuAD 2.0's answer normalisation, in its order: lower case, drop punctuation, drop
    articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer(text: str) -> str:
    """The fixed no-answer string stands for SQuAD 2.0's empty answer."""
    return "" if text.strip() == NO_ANSWER else text


def _exact(gold: str, predicted: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(predicted))


def _token_f1(gold: str, predicted: str) -> float:
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_v2(gold_answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> Metrics:
    """EM and F1 (percent) overall, on has-answer and on no-answer questions.

    `gold_answers[i]` lists question i's answers (empty, or only `NO_ANSWER`: no answer).
    """
    exact, f1, has_answer = [], [], []
    for answers, predicted in zip(gold_answers, predictions, strict=True):
        golds = [a for a in map(_answer, answers) if normalize_answer(a)] or [""]
        predicted = _answer(predicted)
        exact.append(max(_exact(g, predicted) for g in golds))
        f1.append(max(_token_f1(g, predicted) for g in golds))
        has_answer.append(golds != [""])
    result = {}
    for prefix, keep in (("", lambda h: True), ("has_answer_", bool), ("no_answer_", lambda h: not h)):
        chosen = [i for i, h in enumerate(has_answer) if keep(h)]
        if chosen:
            result[f"{prefix}em"] = 100.0 * sum(exact[i] for i in chosen) / len(chosen)
            result[f"{prefix}f1"] = 100.0 * sum(f1[i] for i in chosen) / len(chosen)
    return result


def radqa(targets: Sequence[str], predictions: Sequence[str]) -> Metrics:
    """`squad_v2` with one gold answer (or `NO_ANSWER`) per question."""
    return squad_v2([[t] for t in targets], predictions)


def best_window(example_ids: Sequence[str], predictions: Sequence[str],
                scores: Sequence[float] | None = None) -> dict[str, str]:
    """One prediction per question from its windows' predictions: among windows that found an
    answer, the best-scoring one (the first without scores); `NO_ANSWER` when none did (a window
    without the answer rightly says so, whatever the others found). Questions in first-seen order."""
    chosen: dict[str, tuple[float, str]] = {}
    for i, (qa_id, predicted) in enumerate(zip(example_ids, predictions, strict=True)):
        score = float("-inf") if _answer(predicted) == "" else (0.0 if scores is None else float(scores[i]))
        if qa_id not in chosen or score > chosen[qa_id][0]:
            chosen[qa_id] = (score, predicted if score > float("-inf") else NO_ANSWER)
    return {qa_id: predicted for qa_id, (_, predicted) in chosen.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def radqa_postprocess(output: str, example: Mapping[str, Any], is_target: bool = False) -> dict:
    """RadQA's postprocess_fn: the window's question id with the gold answers (targets) or the
    decoded answer (predictions), for `radqa_windows`."""
    qa_id = _text(example["example_id"])
    if is_target:
        return {"id": qa_id, "answers": json.loads(_text(example["answers"]))}
    return {"id": qa_id, "text": output.strip()}


def radqa_windows(targets: Sequence[Mapping], predictions: Sequence[Mapping],
                  aux_values: Mapping[str, Sequence[float]] | None) -> Metrics:
    """`squad_v2` per question over windowed examples (`radqa_postprocess` output); the
    decoder's scores in `aux_values["scores"]` (as t5x passes them) pick the best window."""
    answers = {t["id"]: t["answers"] for t in targets}
    scores = (aux_values or {}).get("scores")
    chosen = best_window([p["id"] for p in predictions], [p["text"] for p in predictions],
                         None if scores is None else list(scores))
    return squad_v2([answers[qa_id] for qa_id in chosen], list(chosen.values()))


def majority_baseline(train_targets: Sequence[str], eval_targets: Sequence[str],
                      metric_fn: Callable[[Sequence[str], Sequence[str]], Metrics]) -> Metrics:
    """The metrics of always predicting the most frequent train target (for RadQA usually the
    no-answer string: the empty-answer baseline); ties go to the target seen first."""
    if not train_targets:
        raise ValueError("majority_baseline needs at least one train target")
    majority = collections.Counter(train_targets).most_common(1)[0][0]
    return metric_fn(eval_targets, [majority] * len(eval_targets))
