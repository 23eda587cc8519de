"""The clinical vocabulary: SentencePiece pieces, then 100 sentinels, then the DEID tags.

Id layout (docs/architecture.md): ``[0, S)`` pieces (pad 0, eos 1, unk 2, no bos); ``<extra_id_i>`` is
``S + 99 - i``; tag ``k`` of the folder's tag tuple is ``S + 100 + k``; the model's embedding has
``S + 100 + T`` rounded up to a multiple of 128 rows.

Encoding reproduces the Hugging Face ``T5Tokenizer`` built by `clinical_t5x.text.tokenizer`, id for
id, because that is what fine-tuned models see. HF works in three steps, and so do we:

1. added tokens (``<pad>``, ``</s>``, ``<unk>``, sentinels, tags) are cut out of the raw text,
   leftmost-longest, whatever surrounds them;
2. each stretch between them is normalised with the SentencePiece character map and split on
   whitespace (Rust's ``char::is_whitespace``);
3. every word gets the ``▁`` prefix and is segmented by the unigram model.

We rewrite the text the way the character map leaves it for HF's split (a vertical tab is
deleted, NEL kept but split on; `_rewrites`), cut out the added tokens, split on spaces and let
SentencePiece segment each word. Viterbi ties (a run of underscores as 15+16 or 16+15 pieces)
are broken alike by HF (float64 sums) and SentencePiece (float32) only when the sums are exact,
so piece scores are multiples of ``2**-SCORE_BITS`` (`quantize_scores`, applied when a folder is
written): per-word sums then stay exact in float32. Lower-casing (the scratch vocabulary) lives in
the character map (``nmt_nfkc_cf``), so SentencePiece, TensorFlow Text and HF's ``Precompiled``
normaliser all apply it; tags keep their case. Decoding follows HF's Metaspace decoder (the first
token loses its ``▁``, later ones turn it into a space; ``<unk>`` prints as such), except that pad
and eos vanish, as seqio expects.

Known difference: text that is not a tag but becomes one under NFKC (fullwidth ``［Ｎａｍｅ］``)
gets the tag id from HF, whose unigram vocabulary holds the tag strings; we give pieces.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import seqio
import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from clinical_t5x.data import deid

NUM_SENTINELS = 100
SPIECE_NAME = "spiece.model"
CONFIG_NAME = "clinical_vocab.json"
CONFIG_FORMAT = "clinical_t5x.vocab/1"
# `backend` of a folder that keeps an HF tokenizer.json and its ids (no key: SentencePiece, canonical).
TOKENIZERS_BACKEND = "tokenizers"
# SentencePiece control pieces that Hugging Face also matches in raw text as special tokens.
CONTROL_PIECES = ("<pad>", "</s>", "<unk>")
META = "\u2581"  # SentencePiece's visible space
SCORE_BITS = 8
# Unicode White_Space, i.e. what Hugging Face's WhitespaceSplit (Rust char::is_whitespace) splits on.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)


def sentinel_token(i: int) -> str:
    return f"<extra_id_{i}>"


def round_up(n: int, multiple: int = 128) -> int:
    return -(-n // multiple) * multiple


def added_tokens(num_pieces: int, tags: Sequence[str] = deid.TAGS) -> list[tuple[str, int]]:
    """(token, id) of the sentinels and tags, in id order: what follows the pieces."""
    sentinels = [(sentinel_token(NUM_SENTINELS - 1 - k), num_pieces + k) for k in range(NUM_SENTINELS)]
    return sentinels + [(tag, num_pieces + NUM_SENTINELS + k) for k, tag in enumerate(tags)]


def quantize_scores(model: bytes) -> bytes:
    """The SentencePiece model with every piece score rounded to a multiple of 2**-SCORE_BITS."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    for piece in proto.pieces:
        piece.score = round(piece.score * 2**SCORE_BITS) / 2**SCORE_BITS
    return proto.SerializeToString()


def scores_quantized(model: bytes) -> bool:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    return all((p.score * 2**SCORE_BITS).is_integer() for p in proto.pieces)


def _re2_class(chars: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


class FolderVocabulary:
    """What every vocabulary read from a folder shares: its description from the folder's
    `clinical_vocab.json` (`self._config`, `self._directory`), and its identity: seqio compares
    features' vocabularies and caching pickles them, so equality is the subclass's `_key()` and a
    pickle is the folder."""

    @property
    def directory(self) -> Path | str:
        """The folder: a resolved Path, or a URL string for remote storage (gs://...)."""
        return self._directory

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def source(self) -> str:
        return self._config["source"]

    @property
    def lowercase(self) -> bool:
        return bool(self._config["lowercase"])

    # T5's core ids, the same in every folder (pad 0 is seqio's default).
    @property
    def bos_id(self) -> None:
        return None  # T5 has no bos

    @property
    def eos_id(self) -> int:
        return 1

    @property
    def unk_id(self) -> int:
        return 2

    def _key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": str(self._directory)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self._directory)!r}, source={self.source!r}, "
                f"lowercase={self.lowercase}, vocab_size={self.vocab_size})")


class ClinicalVocabulary(FolderVocabulary, seqio.Vocabulary):
    """seqio vocabulary of one vocabulary folder (see `clinical_t5x.text.vocab_build`)."""

    def __init__(self, directory: str | os.PathLike):
        super().__init__(extra_ids=0)
        self._directory = _location(directory)
        config_path = self._file(CONFIG_NAME)
        self._config = read_config(self._directory)
        if tuple(self._config["tags"]) != deid.TAGS:
            raise ValueError(f"{config_path}: its DEID tags differ from clinical_t5x.data.deid.TAGS; rebuild the vocabulary")
        self._model_bytes = _read(self.spiece_path)
        self._digest = hashlib.sha256(self._model_bytes).hexdigest()
        self._check_model()

    # -- construction -------------------------------------------------------------------------
    def _check_model(self) -> None:
        sp = self._sp
        if (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) != (0, 1, 2, -1):
            raise ValueError(f"{self.spiece_path}: needs T5's conventions pad=0 eos=1 unk=2 and no bos")
        if not scores_quantized(self._model_bytes):
            raise ValueError(f"{self.spiece_path}: piece scores are not multiples of 2**-{SCORE_BITS} "
                             "(write the folder with clinical_t5x.text.vocab_build)")
        inner_space = [i for i in range(sp.get_piece_size()) if META in sp.id_to_piece(i)[1:]]
        if inner_space:
            warnings.warn(f"{self.spiece_path}: pieces {inner_space[:5]} hold an inner '{META}'; HF splits "
                          "words there, so encodings may differ from the HF tokenizer's")
        if sp.get_piece_size() != self._config["num_pieces"]:
            raise ValueError(f"{self.spiece_path}: {sp.get_piece_size()} pieces, "
                             f"{CONFIG_NAME} says {self._config['num_pieces']}")

    @functools.cached_property
    def _sp(self) -> spm.SentencePieceProcessor:
        return spm.SentencePieceProcessor(model_proto=self._model_bytes)

    @functools.cached_property
    def _tokens(self) -> list[str]:
        """Every id's token string (pieces as HF names them, then sentinels and tags)."""
        pieces = [self._sp.id_to_piece(i) for i in range(self.num_pieces)]
        return pieces + [token for token, _ in added_tokens(self.num_pieces, self.tags)]

    @functools.cached_property
    def _added(self) -> dict[str, int]:
        """Tokens that HF cuts out of raw text, with their ids."""
        controls = {piece: self._sp.piece_to_id(piece) for piece in CONTROL_PIECES}
        return {**controls, **dict(added_tokens(self.num_pieces, self.tags))}

    @functools.cached_property
    def _added_pattern(self) -> str:
        # Longest first: with leftmost-first alternation (Python re and RE2) that is leftmost-longest.
        return "|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True))

    @functools.cached_property
    def _rewrites(self) -> list[tuple[str, str]]:
        """(characters, replacement) applied to the text, in order (none touches an added token).

        NUL becomes a private-use character that is just as unknown to the model, because
        TensorFlow Text's regex split reads a string only up to its first NUL; whitespace becomes
        what HF's split sees after the character map (deleted or a space).
        """
        normalizer = spm.SentencePieceNormalizer(
            model_proto=self._model_bytes, add_dummy_prefix=False, escape_whitespaces=False,
            remove_extra_whitespaces=False)
        deleted = "".join(c for c in RUST_WHITESPACE if normalizer.normalize(c) == "")
        spaced = "".join(c for c in RUST_WHITESPACE if c not in deleted and c != " ")
        stand_in = next(c for c in map(chr, range(0xE000, 0xF900))
                        if self._sp.piece_to_id(c) == self.unk_id and normalizer.normalize(c) == c)
        return [(chars, out) for chars, out in (("\x00", stand_in), (deleted, ""), (spaced, " ")) if chars]

    @functools.cached_property
    def _py_regexes(self) -> tuple[re.Pattern, list[tuple[re.Pattern, str]]]:
        return (re.compile(f"({self._added_pattern})"),
                [(re.compile(f"[{re.escape(chars)}]"), out) for chars, out in self._rewrites])

    @functools.cached_property
    def _tf_tokenizer(self) -> tf_text.SentencepieceTokenizer:
        # Made eagerly even when first needed inside a tf.data/tf.function trace, so that the
        # model resource is parsed once and every later graph can capture it.
        with tf.init_scope():
            return tf_text.SentencepieceTokenizer(model=self._model_bytes, out_type=tf.int32)

    # -- public description ---------------------------------------------------------------------
    @property
    def spiece_path(self) -> Path | str:
        return self._file(SPIECE_NAME)

    def _file(self, name: str) -> Path | str:
        return folder_file(self._directory, name)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._config["tags"])

    @property
    def num_pieces(self) -> int:
        return int(self._config["num_pieces"])

    @property
    def tag_ids(self) -> dict[str, int]:
        return {tag: self.num_pieces + NUM_SENTINELS + k for k, tag in enumerate(self.tags)}

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < NUM_SENTINELS:
            raise ValueError(f"sentinel index {i} outside [0, {NUM_SENTINELS})")
        return self._added[sentinel_token(i)]

    @property
    def model_vocab_size(self) -> int:
        return round_up(self._base_vocab_size)

    @property
    def _base_vocab_size(self) -> int:
        return self.num_pieces + NUM_SENTINELS + len(self.tags)

    def id_to_token(self, i: int) -> str:
        return self._tokens[i]

    # -- python -----------------------------------------------------------------------------------
    def _rewrite(self, text: str) -> str:
        for pattern, out in self._py_regexes[1]:
            text = pattern.sub(out, text)
        return text

    def _encode(self, s: str) -> list[int]:
        parts = self._py_regexes[0].split(self._rewrite(s))  # text, token, text, ..., text
        words = [p.split(" ") for p in parts[::2]]
        pieces = iter(self._sp.encode([w for stretch in words for w in stretch]))
        ids: list[int] = []
        for k, stretch in enumerate(words):
            if k:
                ids.append(self._added[parts[2 * k - 1]])
            for _ in stretch:
                ids.extend(next(pieces))
        return ids

    def _decode(self, ids: Sequence[int]) -> str:
        tokens = [self._tokens[int(i)] for i in ids if int(i) not in (self.pad_id, self.eos_id)]
        return "".join(t.replace(META, " " if k else "") for k, t in enumerate(tokens))

    # -- tensorflow -------------------------------------------------------------------------------
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """Scalar string -> int32 ids; a vector of strings -> ragged ids (one row per string)."""
        s = tf.convert_to_tensor(s, tf.string)
        if s.shape.rank == 0:
            return self._encode_batch_tf(tf.reshape(s, [1]))[0]
        return self._encode_batch_tf(s)

    def _encode_batch_tf(self, texts: tf.Tensor) -> tf.RaggedTensor:
        for chars, out in self._rewrites:
            texts = tf.strings.regex_replace(texts, _re2_class(chars), out)
        parts = tf_text.regex_split(texts, self._added_pattern, keep_delim_regex_pattern=self._added_pattern)
        flat = parts.flat_values
        tokens = tf.constant(list(self._added), tf.string)
        matches = tf.equal(flat[:, None], tokens[None, :])
        is_added = tf.reduce_any(matches, axis=1)
        added_id = tf.gather(tf.constant(list(self._added.values()), tf.int32),
                             tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32))
        stretches = tf.where(is_added, "", flat)
        piece_ids = self._tf_tokenizer.tokenize(tf.strings.split(stretches, " ")).merge_dims(1, 2)
        added_rows = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(added_id, is_added), tf.cast(is_added, tf.int64))
        per_part = tf.concat([added_rows, tf.cast(piece_ids, tf.int32)], axis=1)
        return parts.with_flat_values(per_part).merge_dims(1, 2)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """ids of shape [..., length] -> strings of shape [...] (HF's Metaspace decoding)."""
        ids = tf.convert_to_tensor(ids)
        shape = tf.shape(ids)
        rows = tf.reshape(ids, [-1, shape[-1]])
        keep = tf.logical_and(tf.not_equal(rows, self.pad_id), tf.not_equal(rows, self.eos_id))
        kept = tf.ragged.boolean_mask(rows, keep)
        tokens = tf.gather(tf.constant(self._tokens, tf.string), kept)
        first = tf.ragged.map_flat_values(tf.strings.regex_replace, tokens[:, :1], META, "")
        rest = tf.ragged.map_flat_values(tf.strings.regex_replace, tokens[:, 1:], META, " ")
        text = tf.strings.reduce_join(tf.concat([first, rest], axis=1), axis=1)
        return tf.reshape(text, shape[:-1])

    # -- identity (seqio compares features' vocabularies; caching pickles them) -------------------
    def _key(self) -> tuple:
        return (self._digest, self.lowercase, self.tags)

def _location(directory: str | os.PathLike) -> Path | str:
    """Local folders as resolved Paths; URLs (gs://, as TPU pods use) as they are, read through tf.io.gfile."""
    text = os.fspath(directory)
    return text if "://" in text else Path(text).resolve()


def _read(path: Path | str) -> bytes:
    with tf.io.gfile.GFile(str(path), "rb") as f:
        return f.read()


def folder_file(directory: Path | str, name: str) -> Path | str:
    """`name` inside a folder given as a Path or a URL string."""
    if isinstance(directory, Path):
        return directory / name
    return f"{directory.rstrip('/')}/{name}"


def read_config(directory: Path | str) -> dict[str, Any]:
    """A vocabulary folder's `clinical_vocab.json`, checked for its format."""
    config_path = folder_file(directory, CONFIG_NAME)
    if not tf.io.gfile.exists(str(config_path)):
        raise FileNotFoundError(f"not a vocabulary folder: {config_path} is missing "
                                "(build one with `clinical-t5x vocab`)")
    config = json.loads(_read(config_path))
    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {CONFIG_FORMAT!r}")
    return config


@functools.lru_cache(maxsize=None)
def _load_cached(directory: Path | str, stamp: int) -> seqio.Vocabulary:
    if stamp >= 0 and read_config(directory).get("backend") == TOKENIZERS_BACKEND:
        from clinical_t5x.text.tokenizers_vocab import TokenizersVocabulary

        return TokenizersVocabulary(directory)
    return ClinicalVocabulary(directory)


def load(directory: str | os.PathLike) -> seqio.Vocabulary:
    """The vocabulary of a folder written by `clinical-t5x vocab`, local or remote (gs://...):
    a `ClinicalVocabulary` (SentencePiece, canonical ids), or for a folder that keeps a Hugging
    Face tokenizer's own ids a `tokenizers_vocab.TokenizersVocabulary`; both answer the same calls.

    Cached per folder: local ones until their config changes; remote ones for the process (a
    training job's vocabulary does not change under it, and this saves a round trip per call).
    """
    location = _location(directory)
    stamp = 0
    if isinstance(location, Path):
        try:
            stamp = (location / CONFIG_NAME).stat().st_mtime_ns
        except FileNotFoundError:
            stamp = -1  # ClinicalVocabulary names the missing file
    return _load_cached(location, stamp)
