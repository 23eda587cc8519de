"""T5 span corruption as a SeqIO preprocessor (SeqIO ships none; the `t5` package is avoided).

Semantics follow T5's pretraining objective: tokenized notes, each followed by EOS, are
concatenated and cut into chunks just long enough that the corrupted inputs fill the requested
input length once EOS is appended (512 -> chunks of 568, targets 114). In each chunk a random
set of spans (density 0.15, mean length 3 by default) is replaced in the inputs by successive
sentinels `<extra_id_0>`, `<extra_id_1>`, ...; the targets list each sentinel followed by the
span it hides. The final EOS is left to `seqio.preprocessors.append_eos_after_trim`, as in
T5's tasks, so the output lengths are the requested ones exactly.

Randomness comes only from SeqIO's stateless seeds (`map_over_dataset`, one set per group of
notes), so a task's output is a pure function of its `seed`. Sentinel ids are looked up by
their piece name in the vocabulary, never computed from its size (the DEID tags follow the
sentinels). For speed, notes are tokenized in batches (`tokenize_in_batches`) and all full
chunks of a group are corrupted at once as one matrix.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

# How many notes are concatenated before cutting chunks: large enough that the one short tail
# chunk per group is rare, small enough to keep latency and memory low (T5 uses 128 too).
NOTES_PER_GROUP = 128
# The sentinel budget of every T5 vocabulary.
MAX_SENTINELS = 100

log = logging.getLogger(__name__)


def _span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a chunk of `length` tokens, T5's rounding (half-even).

    Both counts are clamped so that every noise and non-noise span can be non-empty.
    """
    if length < 2:
        return 0, 0
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    return num_noise, min(num_spans, num_noise, length - num_noise)


def corrupted_lengths(chunk_length: int, noise_density: float = 0.15,
                      mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(inputs, targets) lengths, EOS included, of a corrupted chunk of `chunk_length` tokens."""
    num_noise, num_spans = _span_counts(chunk_length, noise_density, mean_noise_span_length)
    return chunk_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def chunk_length_for(inputs_length: int, noise_density: float = 0.15,
                     mean_noise_span_length: float = 3.0) -> int:
    """The longest chunk whose corrupted inputs (with EOS) still fit `inputs_length`."""
    length = max(inputs_length - 1, 2)
    while corrupted_lengths(length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        length += 1
    return length


def sentinel_ids(vocabulary: seqio.Vocabulary, count: int) -> list[int]:
    """Ids of `<extra_id_0>` ... `<extra_id_{count-1}>` in `vocabulary`.

    A ClinicalVocabulary answers `sentinel_id(i)`; a plain `seqio.SentencePieceVocabulary`
    holds them as (possibly "▁"-prefixed) pieces of its model.
    """
    if count > MAX_SENTINELS:
        raise ValueError(f"span corruption needs {count} sentinels; vocabularies hold {MAX_SENTINELS}")
    if hasattr(vocabulary, "sentinel_id"):
        return [int(vocabulary.sentinel_id(i)) for i in range(count)]
    processor = getattr(vocabulary, "tokenizer", None)
    if processor is None:
        raise TypeError(f"cannot find sentinel pieces in a {type(vocabulary).__name__}")
    ids = []
    for i in range(count):
        for piece in (f"<extra_id_{i}>", f"\u2581<extra_id_{i}>"):
            piece_id = processor.piece_to_id(piece)
            if piece_id != processor.unk_id():
                ids.append(piece_id)
                break
        else:
            raise ValueError(f"vocabulary has no piece <extra_id_{i}>")
    return ids


def _id_runs(ids: Sequence[int]) -> str:
    """`ids` as runs of consecutive ids, e.g. "32099-32000" for T5's descending sentinels."""
    runs: list[list[int]] = []
    for i in ids:
        run = runs[-1] if runs else []
        steps = (run[1] - run[0],) if len(run) > 1 else (1, -1)
        if run and i - run[-1] in steps:
            run.append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def checked_sentinel_ids(vocabulary: seqio.Vocabulary, count: int) -> list[int]:
    """`sentinel_ids`, refusing any that is a DEID tag's id, and logged.

    The scripts behind the released Clinical-T5 models took sentinels from the end of the
    vocabulary, where the added tags live; continued pretraining must never mask spans with a
    tag, and its log must say which ids it masks with.
    """
    ids = sentinel_ids(vocabulary, count)
    tag_ids = dict(getattr(vocabulary, "tag_ids", {}) or {})
    clash = sorted(tag for tag, i in tag_ids.items() if i in set(ids))
    if clash:
        raise ValueError(f"sentinel ids {sorted(tag_ids[t] for t in clash)} are DEID tags {clash}: "
                         "the vocabulary's sentinels and tags must be disjoint")
    log.info("span corruption masks with <extra_id_0>..<extra_id_%d> = ids %s (DEID tags at %s)",
             count - 1, _id_runs(ids), _id_runs(sorted(tag_ids.values())) if tag_ids else "none")
    return ids


def tokenize_in_batches(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                        feature: str = "targets", batch_size: int = NOTES_PER_GROUP) -> tf.data.Dataset:
    """`seqio.preprocessors.tokenize` for one text feature, encoding `batch_size` notes per call.

    One TF call per batch halves the tokenisation cost of the DEID-aware clinical vocabulary
    (whose per-call work does not depend on how many notes it gets). Emits one example per note
    holding only `feature`; the vocabulary's `encode_tf` must accept a vector of strings.
    """
    vocabulary = output_features[feature].vocabulary

    def encode(texts: tf.Tensor) -> dict[str, tf.RaggedTensor]:
        ids = vocabulary.encode_tf(texts)
        if not isinstance(ids, tf.RaggedTensor):
            raise TypeError(f"{type(vocabulary).__name__}.encode_tf gave no ragged ids for a batch of texts")
        return {feature: tf.cast(ids, tf.int32)}

    texts = dataset.map(lambda ex: ex[feature], num_parallel_calls=tf.data.AUTOTUNE)
    return texts.batch(batch_size).map(encode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _chunk_groups(dataset: tf.data.Dataset, chunk_length: int, eos_id: int,
                  feature: str) -> tf.data.Dataset:
    """Per group of NOTES_PER_GROUP notes, each followed by EOS and all concatenated: the full
    chunks as one [n, chunk_length] matrix and the shorter rest (possibly empty), as in T5."""
    def chunk_group(notes: tf.RaggedTensor | tf.Tensor) -> dict[str, tf.Tensor]:
        if isinstance(notes, tf.Tensor):  # notes of one static length batch densely
            notes = tf.RaggedTensor.from_tensor(notes)
        notes = tf.cast(notes, tf.int32)
        eos = tf.fill([notes.nrows(), 1], eos_id)
        tokens = tf.concat([notes, eos], axis=1).flat_values
        full = tf.size(tokens) // chunk_length * chunk_length
        return {"full": tf.reshape(tokens[:full], [-1, chunk_length]), "tail": tokens[full:]}

    notes = dataset.map(lambda ex: ex[feature], num_parallel_calls=tf.data.AUTOTUNE)
    return notes.ragged_batch(NOTES_PER_GROUP).map(chunk_group, num_parallel_calls=tf.data.AUTOTUNE)


def split_into_chunks(dataset: tf.data.Dataset, chunk_length: int, eos_id: int,
                      feature: str = "targets") -> tf.data.Dataset:
    """The int32 chunks that span corruption works on, one per element, in its order: every
    token of every note, each note followed by EOS, one shorter chunk ending each group."""
    def rows(group: dict[str, tf.Tensor]) -> tf.data.Dataset:
        tail = group["tail"][None][: tf.minimum(tf.size(group["tail"]), 1)]
        return (tf.data.Dataset.from_tensor_slices(group["full"])
                .concatenate(tf.data.Dataset.from_tensor_slices(tail)))
    return _chunk_groups(dataset, chunk_length, eos_id, feature).flat_map(rows)


def _count_table(chunk_length: int, noise_density: float, mean_noise_span_length: float) -> np.ndarray:
    """[noise tokens, noise spans] for every chunk length up to `chunk_length`: one source of
    truth for the TF graph and `corrupted_lengths`."""
    return np.array([_span_counts(n, noise_density, mean_noise_span_length)
                     for n in range(chunk_length + 1)], dtype=np.int32)


def _random_segment_lengths(rows: tf.Tensor, num_items: tf.Tensor, num_segments: tf.Tensor,
                            seed: tf.Tensor) -> tf.Tensor:
    """[rows, num_segments] lengths: per row, a uniformly random split of `num_items` into
    `num_segments` non-empty parts (the cut points are a random subset of the gaps)."""
    scores = tf.random.stateless_uniform(tf.stack([rows, tf.maximum(num_items - 1, 0)]), seed=seed)
    cuts = tf.math.top_k(scores, k=tf.maximum(num_segments - 1, 0), sorted=False).indices
    bounds = tf.concat([tf.zeros([rows, 1], tf.int32), tf.sort(cuts, axis=1) + 1,
                        tf.fill([rows, 1], num_items)], axis=1)
    return bounds[:, 1:] - bounds[:, :-1]


def _corrupt_rows(rows: tf.Tensor, seeds: tuple, sentinels: tf.Tensor,
                  counts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Span-corrupts every row of a [rows, length] matrix: inputs and targets, without EOS.

    Rows of one length share their noise and span counts, so both outputs stay dense.
    """
    num_rows, length = tf.shape(rows)[0], tf.shape(rows)[1]
    num_noise, num_spans = counts[length, 0], counts[length, 1]
    noise = _random_segment_lengths(num_rows, num_noise, num_spans, tf.stack(seeds[0]))
    clean = _random_segment_lengths(num_rows, length - num_noise, num_spans, tf.stack(seeds[1]))
    # Spans alternate clean, noise, clean, noise, ...: span 2k+1 is noise span k.
    span_lengths = tf.reshape(tf.stack([clean, noise], axis=2), [-1])
    span = tf.repeat(tf.tile(tf.range(2 * num_spans), [num_rows]), span_lengths)
    span = tf.reshape(span, [num_rows, length])
    is_noise = tf.bitwise.bitwise_and(span, 1) == 1
    starts_span = tf.concat([tf.ones([num_rows, 1], tf.bool), span[:, 1:] != span[:, :-1]], axis=1)
    sentinel = tf.gather(sentinels, tf.bitwise.right_shift(span, 1))
    inputs = tf.boolean_mask(tf.where(is_noise, sentinel, rows), ~is_noise | starts_span)
    targets = tf.boolean_mask(tf.where(is_noise, rows, sentinel), is_noise | starts_span)
    return (tf.reshape(inputs, [num_rows, length - num_noise + num_spans]),
            tf.reshape(targets, [num_rows, num_noise + num_spans]))


def corrupt_matrix(rows: np.ndarray, seed: int, stream: int, sentinels: Sequence[int],
                   noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Span-corrupts each row of a [rows, length] id matrix (numpy in and out, no EOS), with the
    task's own masking: for scoring chunks of notes the way the model saw them in training.
    (`seed`, `stream`) fixes the masks, so a score is reproducible."""
    rows = np.asarray(rows, np.int32)
    counts = _count_table(rows.shape[1], noise_density, mean_noise_span_length)
    seeds = (tf.constant([seed, 2 * stream]), tf.constant([seed, 2 * stream + 1]))
    inputs, targets = _corrupt_rows(tf.constant(rows), seeds, tf.constant(list(sentinels), tf.int32),
                                    tf.constant(counts))
    return inputs.numpy(), targets.numpy()


@seqio.map_over_dataset(num_seeds=4)
def _corrupt_group(group: dict[str, tf.Tensor], seeds, sentinels: tf.Tensor,
                   counts: tf.Tensor) -> dict[str, tf.RaggedTensor]:
    """Corrupts a group's full chunks at once, then its rest (dropped if under two tokens)."""
    tail = group["tail"][None][: tf.cast(tf.size(group["tail"]) >= 2, tf.int32)]
    full_inputs, full_targets = _corrupt_rows(group["full"], seeds[:2], sentinels, counts)
    tail_inputs, tail_targets = _corrupt_rows(tail, seeds[2:], sentinels, counts)
    return {
        "inputs": tf.concat([tf.RaggedTensor.from_tensor(full_inputs),
                             tf.RaggedTensor.from_tensor(tail_inputs)], axis=0),
        "targets": tf.concat([tf.RaggedTensor.from_tensor(full_targets),
                              tf.RaggedTensor.from_tensor(tail_targets)], axis=0),
    }


def span_corruption(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                    output_features: Mapping[str, seqio.Feature], noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> tf.data.Dataset:
    """SeqIO preprocessor: tokenized `targets` (one note each) -> span-corrupted examples.

    Follow it with `seqio.preprocessors.append_eos_after_trim`; the outputs then have exactly
    `sequence_length["inputs"]` tokens (and the matching targets length) for full chunks.
    """
    vocabulary = output_features["targets"].vocabulary
    chunk_length = chunk_length_for(sequence_length["inputs"], noise_density, mean_noise_span_length)
    targets_length = corrupted_lengths(chunk_length, noise_density, mean_noise_span_length)[1]
    if sequence_length.get("targets") is not None and sequence_length["targets"] < targets_length:
        raise ValueError(f"targets length {sequence_length['targets']} would cut targets short: inputs "
                         f"of {sequence_length['inputs']} need {targets_length}")
    counts = _count_table(chunk_length, noise_density, mean_noise_span_length)
    sentinels = tf.constant(checked_sentinel_ids(vocabulary, int(counts[:, 1].max())), tf.int32)
    groups = _chunk_groups(dataset, chunk_length, vocabulary.eos_id, "targets")
    return _corrupt_group(groups, sentinels=sentinels, counts=tf.constant(counts)).unbatch()
