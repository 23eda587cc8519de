"""Span corruption: T5's lengths, statistics over 10,000 examples, exact reconstruction, seeds."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf

from clinical_t5x.text import span_corruption as sc
from clinical_t5x.text import vocab_build

WORDS = "patient admitted with chest pain history of hypertension given aspirin daily blood".split()


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> seqio.SentencePieceVocabulary:
    """A tiny T5-convention SentencePiece model (pad 0, eos 1, unk 2) plus 100 extra ids."""
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, 20)) for _ in range(500)]
    prefix = tmp_path_factory.mktemp("spm") / "sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    return seqio.SentencePieceVocabulary(f"{prefix}.model", extra_ids=100)


@pytest.fixture(scope="module")
def clinical_vocabulary(tmp_path_factory):
    """The project's vocabulary layout: pieces, 100 sentinels, then the DEID tags."""
    from clinical_t5x.text import vocab

    return vocab.load(vocab_build.build_synthetic_vocab(tmp_path_factory.mktemp("vocab")))


def _features(vocabulary) -> dict[str, seqio.Feature]:
    return {k: seqio.Feature(vocabulary) for k in ("inputs", "targets")}


def _notes(count: int, seed: int, low: int, high: int, extra: tuple[int, ...] = ()) -> tuple[list[np.ndarray], tf.data.Dataset]:
    """Random "tokenized notes" of ids in [3, high) + `extra`, of varied lengths, no EOS inside."""
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.arange(3, high), extra]).astype(np.int32)
    notes = [rng.choice(ids, size=rng.integers(low, 2000)) for _ in range(count)]
    ds = tf.data.Dataset.from_generator(lambda: ({"targets": n} for n in notes),
                                        output_signature={"targets": tf.TensorSpec([None], tf.int32)})
    return notes, ds


def _corrupt(ds, vocabulary, seed: int, inputs_length=512, **kwargs) -> list[dict[str, np.ndarray]]:
    with seqio.utils.map_seed_manager(seed):
        out = sc.span_corruption(ds, {"inputs": inputs_length}, _features(vocabulary), **kwargs)
    return list(out.as_numpy_iterator())


def _reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Puts each target span back where its sentinel stands in the inputs."""
    spans = np.split(targets, np.flatnonzero(np.isin(targets, sentinels)))[1:]
    pieces = np.split(inputs, np.flatnonzero(np.isin(inputs, sentinels)))
    out = [pieces[0]]
    for span, piece in zip(spans, pieces[1:]):
        assert span[0] == piece[0], "sentinels out of order"
        out += [span[1:], piece[1:]]
    return np.concatenate(out)


def test_lengths_match_t5():
    assert sc.chunk_length_for(512) == 568
    assert sc.corrupted_lengths(568) == (512, 114)
    for length in (64, 256, 1024):
        inputs, _ = sc.corrupted_lengths(sc.chunk_length_for(length))
        assert inputs == length


def test_too_short_targets_are_refused(vocabulary):
    _, ds = _notes(1, seed=0, low=10, high=50)
    with pytest.raises(ValueError, match="targets length 100 would cut targets short: inputs of 512 need 114"):
        sc.span_corruption(ds, {"inputs": 512, "targets": 100}, _features(vocabulary))


def test_sentinels_are_the_extra_id_pieces(vocabulary):
    ids = sc.sentinel_ids(vocabulary, 100)
    assert ids[0] == vocabulary.vocab_size - 1 and ids[99] == vocabulary.vocab_size - 100
    assert [vocabulary.decode([i]) for i in ids[:2]] == ["<extra_id_0>", "<extra_id_1>"]
    with pytest.raises(ValueError, match="101 sentinels"):
        sc.sentinel_ids(vocabulary, 101)


def test_sentinels_used_are_logged_with_the_tags(clinical_vocabulary, caplog):
    with caplog.at_level(logging.INFO, logger=sc.__name__):
        ids = sc.checked_sentinel_ids(clinical_vocabulary, 3)
    assert ids == [clinical_vocabulary.sentinel_id(i) for i in range(3)]
    tags = sorted(clinical_vocabulary.tag_ids.values())
    assert f"<extra_id_0>..<extra_id_2> = ids {ids[0]}-{ids[2]} (DEID tags at {tags[0]}-{tags[-1]})" in caplog.text


class _TagsAsSentinels:
    """What the released models' pretraining scripts did: sentinels from the vocabulary's end,
    where the added tags are."""

    tag_ids = {"[Name]": 501, "[LOC]": 500}

    def sentinel_id(self, i: int) -> int:
        return 501 - i


def test_a_sentinel_that_is_a_tag_is_refused():
    with pytest.raises(ValueError, match=r"sentinel ids \[500, 501\] are DEID tags \['\[LOC\]', '\[Name\]'\]"):
        sc.checked_sentinel_ids(_TagsAsSentinels(), 2)


def test_chunks_concatenate_notes_with_eos():
    notes, ds = _notes(300, seed=1, low=1, high=50)
    chunks = list(sc.split_into_chunks(ds, 568, eos_id=1).as_numpy_iterator())
    expected = np.concatenate([np.append(n, 1) for n in notes])
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    lengths = [len(c) for c in chunks]
    assert max(lengths) == 568 and sum(n < 568 for n in lengths) == 3  # one tail per 128 notes


@pytest.mark.parametrize("tokens", [567, 568, 569])
def test_groups_ending_in_no_or_one_spare_token(vocabulary, tokens):
    note = np.arange(3, 3 + tokens, dtype=np.int32) % 40 + 3
    ds = tf.data.Dataset.from_tensors({"targets": note})
    examples = _corrupt(ds, vocabulary, seed=0)
    assert [len(e["inputs"]) + 1 for e in examples] == [512] + [3] * (tokens == 569)


@pytest.mark.slow
def test_statistics_and_reconstruction_over_10000_examples(clinical_vocabulary):
    vocabulary = clinical_vocabulary
    tags = tuple(vocabulary.tag_ids.values())
    notes, ds = _notes(5800, seed=2, low=1, high=vocabulary.num_pieces, extra=tags)
    originals = list(sc.split_into_chunks(ds, 568, eos_id=1).filter(
        lambda t: tf.size(t) >= 2).as_numpy_iterator())
    examples = _corrupt(ds, vocabulary, seed=7)
    assert len(examples) == len(originals) >= 10_000
    sentinels = np.array(sc.sentinel_ids(vocabulary, 100))
    assert not set(sentinels.tolist()) & set(tags)  # a DEID tag is never a sentinel
    assert vocabulary.decode(sentinels[:2].tolist()) == "<extra_id_0><extra_id_1>"
    noise = spans = tokens = 0
    for ex, original in zip(examples, originals):
        inputs, targets = ex["inputs"], ex["targets"]
        np.testing.assert_array_equal(_reconstruct(inputs, targets, sentinels), original)
        used = inputs[np.isin(inputs, sentinels)]
        np.testing.assert_array_equal(used, sentinels[: len(used)])  # <extra_id_0>, 1, 2, ...
        tokens += len(original)
        spans += len(used)
        noise += len(targets) - len(used)
        if len(original) == 568:
            assert (len(inputs) + 1, len(targets) + 1) == (512, 114)
    assert abs(noise / tokens - 0.15) < 0.005
    assert abs(noise / spans - 3.0) < 0.1


def test_other_settings_are_honoured(vocabulary):
    _, ds = _notes(200, seed=3, low=100, high=vocabulary.vocab_size - 100)
    examples = _corrupt(ds, vocabulary, seed=0, inputs_length=256, noise_density=0.3,
                        mean_noise_span_length=8.0)
    sentinels = sc.sentinel_ids(vocabulary, 100)
    noise = sum(len(e["targets"]) for e in examples) - sum(np.isin(e["inputs"], sentinels).sum() for e in examples)
    spans = sum(np.isin(e["inputs"], sentinels).sum() for e in examples)
    tokens = noise + sum(len(e["inputs"]) for e in examples) - spans
    assert abs(noise / tokens - 0.3) < 0.01 and abs(noise / spans - 8.0) < 0.5
    assert max(len(e["inputs"]) for e in examples) == 255


@pytest.mark.slow
def test_deterministic_under_seqio_seed(vocabulary):
    _, ds = _notes(40, seed=4, low=50, high=vocabulary.vocab_size - 100)
    first, again, other = (_corrupt(ds, vocabulary, seed=s) for s in (11, 11, 12))
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, again))
    assert any(not np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other))
