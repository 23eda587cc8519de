"""A seqio vocabulary that keeps a Hugging Face tokenizer's own ids, run by the `tokenizers` library.

For the released Clinical-T5 folders (see `clinical_t5x.text.vocab_build.from_hf`): their
``tokenizer.json`` is what the models were trained with, so encoding runs that very file through
the same Rust library that `transformers` uses; parity with `AutoTokenizer` holds by
construction, whatever the pipeline (a SentencePiece-converted Unigram with tags added in any
order, or a `tokenizers` Unigram with NMT + NFKC, lower-casing and one-digit pre-tokenisation).
Only the ids of the folder's ``clinical_vocab.json`` are trusted to say where the sentinels and
DEID tags are, and they are checked against the file.

The TensorFlow side (seqio calls `encode_tf` inside tf.data) crosses into Python with
`tf.numpy_function`: one call per batch of texts, which `tokenizers` encodes in parallel.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf
from tokenizers import Tokenizer

from clinical_t5x.data import deid
from clinical_t5x.text import vocab

TOKENIZER_NAME = "tokenizer.json"


class TokenizersVocabulary(vocab.FolderVocabulary, seqio.Vocabulary):
    """seqio vocabulary of a vocabulary folder whose `clinical_vocab.json` says
    ``"backend": "tokenizers"``; the same public calls as `vocab.ClinicalVocabulary`."""

    def __init__(self, directory: str | os.PathLike):
        super().__init__(extra_ids=0)
        self._directory = vocab._location(directory)
        self._config = vocab.read_config(self._directory)
        self._json = vocab._read(vocab.folder_file(self._directory, TOKENIZER_NAME)).decode("utf-8")
        self._digest = hashlib.sha256(self._json.encode()).hexdigest()
        self._check()

    def _check(self) -> None:
        where = vocab.folder_file(self._directory, vocab.CONFIG_NAME)
        if set(self._config["tag_ids"]) != set(deid.TAGS):
            raise ValueError(f"{where}: its DEID tags differ from clinical_t5x.data.deid.TAGS; rebuild the vocabulary")
        if len(self._config["sentinel_ids"]) != vocab.NUM_SENTINELS:
            raise ValueError(f"{where}: needs all {vocab.NUM_SENTINELS} sentinel ids")
        ids = self._tokenizer.get_vocab(with_added_tokens=True)
        wrong = [t for t, i in {**self._config["sentinel_ids"], **self._config["tag_ids"]}.items() if ids.get(t) != i]
        if wrong:
            raise ValueError(f"{where}: {TOKENIZER_NAME} puts {wrong[:5]} at other ids than this file says")
        if [ids.get(t) for t in vocab.CONTROL_PIECES] != [self.pad_id, self.eos_id, self.unk_id]:
            raise ValueError(f"{where}: {TOKENIZER_NAME} needs T5's <pad>=0, </s>=1, <unk>=2")

    @functools.cached_property
    def _tokenizer(self) -> Tokenizer:
        tokenizer = Tokenizer.from_str(self._json)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    @functools.cached_property
    def _tokens(self) -> list[str]:
        return [self._tokenizer.id_to_token(i) or "" for i in range(self._base_vocab_size)]

    # -- public description (as ClinicalVocabulary) -----------------------------------------------
    @property
    def tags(self) -> tuple[str, ...]:
        """The DEID tags in id order (which is the source folder's, not necessarily deid.TAGS')."""
        return tuple(sorted(self._config["tag_ids"], key=self._config["tag_ids"].get))

    @property
    def num_pieces(self) -> int:
        return int(self._config["num_pieces"])

    @property
    def tag_ids(self) -> dict[str, int]:
        return {tag: int(self._config["tag_ids"][tag]) for tag in deid.TAGS}

    def sentinel_id(self, i: int) -> int:
        if not 0 <= i < vocab.NUM_SENTINELS:
            raise ValueError(f"sentinel index {i} outside [0, {vocab.NUM_SENTINELS})")
        return int(self._config["sentinel_ids"][vocab.sentinel_token(i)])

    @property
    def appended_ids(self) -> list[int]:
        """Ids the source folder lacked and the vocabulary appended (sentinels): rows a model
        imported from that folder never learned."""
        return sorted(int(i) for i in self._config.get("appended", {}).values())

    @property
    def model_vocab_size(self) -> int:
        return int(self._config["model_vocab_size"])

    @property
    def _base_vocab_size(self) -> int:
        return int(self._config["vocab_size"])

    def id_to_token(self, i: int) -> str:
        return self._tokens[i]

    # -- python -----------------------------------------------------------------------------------
    def _encode(self, s: str) -> list[int]:
        return self._tokenizer.encode(s, add_special_tokens=False).ids

    def _encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def _decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if int(i) not in (self.pad_id, self.eos_id)]
        return self._tokenizer.decode(kept, skip_special_tokens=False)

    # -- tensorflow (a numpy_function bridge into the Python tokenizer) ----------------------------
    def _encode_numpy(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._encode_batch([t.decode("utf-8") for t in texts.reshape(-1)])
        flat = np.fromiter((i for row in rows for i in row), np.int32)
        return flat, np.asarray([len(row) for row in rows], np.int64)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """Scalar string -> int32 ids; a vector of strings -> ragged ids (one row per string)."""
        s = tf.convert_to_tensor(s, tf.string)
        texts = tf.reshape(s, [-1])
        flat, lengths = tf.numpy_function(self._encode_numpy, [texts], [tf.int32, tf.int64], stateful=False)
        ragged = tf.RaggedTensor.from_row_lengths(tf.ensure_shape(flat, [None]),
                                                  tf.ensure_shape(lengths, [None]))
        return ragged[0] if s.shape.rank == 0 else ragged

    def _decode_numpy(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray([self._decode(row).encode("utf-8") for row in rows], dtype=object)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.convert_to_tensor(ids)
        shape = tf.shape(ids)
        rows = tf.reshape(ids, [-1, shape[-1]])
        text = tf.numpy_function(self._decode_numpy, [rows], tf.string, stateful=False)
        return tf.reshape(text, shape[:-1])

    # -- identity (equality, hashing, pickling: vocab.FolderVocabulary) ----------------------------
    def _key(self) -> tuple:
        return (self._digest, tuple(sorted(self._config["tag_ids"].items())))
