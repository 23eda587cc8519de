"""Generate a task split's answers with the cached decoder and score them as SeqIO would.

The examples come from the SeqIO task itself (same preprocessors and truncation as training,
unpacked, in file order), so the built-in engine scores exactly what t5x's evaluator scores:
targets are the `targets_pretokenized` text through the task's `postprocess_fn`
(`is_target=True`), predictions the decoded text through it, then each of the task's
`metric_fns`; a metric function taking `aux_values` (RadQA's window choice) gets the decoder's
per-example log-probabilities as `aux_values["scores"]`, as t5x passes them.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from clinical_t5x.model import decoding


Batch = tuple[np.ndarray, list[dict[str, Any]]]


def split_batches(task, split: str, feature_lengths: Mapping[str, int],
                  batch_size: int) -> list[Batch]:
    """A split's examples read once through the task, for scoring several checkpoints on them
    (reading a split runs the task's whole preprocessing pipeline: seconds to minutes)."""
    return list(_batches(task, split, feature_lengths, batch_size))


def _batches(task, split: str, feature_lengths: Mapping[str, int],
             batch_size: int) -> Iterator[Batch]:
    """Fixed-shape [batch_size, inputs_length] id arrays (zero rows fill the last one, so
    one compiled decoder serves every batch) with the examples they hold."""
    dataset = task.get_dataset(dict(feature_lengths), split=split, shuffle=False, num_epochs=1)
    chunk: list[dict[str, Any]] = []
    for example in dataset.as_numpy_iterator():
        chunk.append(example)
        if len(chunk) == batch_size:
            yield _pad(chunk, feature_lengths["inputs"], batch_size), chunk
            chunk = []
    if chunk:
        yield _pad(chunk, feature_lengths["inputs"], batch_size), chunk


def _pad(examples: list[dict[str, Any]], length: int, batch_size: int) -> np.ndarray:
    ids = np.zeros((batch_size, length), np.int32)
    for row, example in enumerate(examples):
        inputs = example["inputs"][:length]
        ids[row, :len(inputs)] = inputs
    return ids


def _text(ids: np.ndarray, vocabulary, eos_id: int) -> str:
    ids = ids.tolist()
    if eos_id in ids:
        ids = ids[:ids.index(eos_id)]
    return vocabulary.decode([i for i in ids if i > 0])


def predict(model, params, task, batches: Sequence[Batch], targets_length: int,
            ) -> tuple[list[dict[str, Any]], list[str], list[float]]:
    """(examples, decoded predictions, log-probability scores) of `batches`, in order."""
    vocabulary = task.output_features["targets"].vocabulary
    eos = vocabulary.eos_id
    examples, texts, scores = [], [], []
    for ids, chunk in batches:
        out = decoding.greedy_decode(model, params, ids, targets_length, eos_id=eos)
        tokens, row_scores = np.asarray(out.tokens), np.asarray(out.scores)
        examples.extend(chunk)
        texts.extend(_text(tokens[i], vocabulary, eos) for i in range(len(chunk)))
        scores.extend(float(s) for s in row_scores[:len(chunk)])
    return examples, texts, scores


def score(task, examples: list[dict[str, Any]], predictions: list[str],
          scores: list[float]) -> dict[str, float]:
    """The task's metrics of `predictions` (one per example)."""
    post = task.postprocess_fn or (lambda output, example=None, is_target=False: output)
    targets = [post(ex["targets_pretokenized"].decode("utf-8"), example=ex, is_target=True)
               for ex in examples]
    predicted = [post(text, example=ex, is_target=False)
                 for text, ex in zip(predictions, examples)]
    metrics: dict[str, float] = {}
    for fn in task.metric_fns:
        if "aux_values" in inspect.signature(fn).parameters:
            metrics.update(fn(targets, predicted, aux_values={"scores": scores}))
        else:
            metrics.update(fn(targets, predicted))
    return {name: float(value) for name, value in metrics.items()}


def evaluate(model, params, task, batches: Sequence[Batch],
             targets_length: int) -> dict[str, float]:
    """Decode `batches` (from `split_batches`) and return the task's metrics."""
    return score(task, *predict(model, params, task, batches, targets_length))
