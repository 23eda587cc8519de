"""Where a Hugging Face T5 folder's tokenizer puts its special tokens, and the row permutation
into this project's canonical layout.

The released Clinical-T5 folders do not share one layout: Base and Sci carry T5's pieces and
sentinels with the 15 DEID tags appended by `add_tokens` in the order a Python set happened to
iterate; Scratch and Large carry a `tokenizers` Unigram (no SentencePiece model) with the tags
after its pieces and no sentinels at all. The canonical layout (`clinical_t5x.text.vocab`) is
pieces ``[0, S)``, ``<extra_id_i>`` at ``S + 99 - i``, tag ``k`` of `deid.TAGS` at ``S + 100 + k``.
A `TokenLayout` names every special id of a folder, so nothing has to be assumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from clinical_t5x.data import deid

NUM_SENTINELS = 100
CORE_TOKENS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
T5_CORE_IDS = {"pad": 0, "eos": 1, "unk": 2}


def sentinel_token(i: int) -> str:
    return f"<extra_id_{i}>"


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Ids of a tokenizer: its size (largest id + 1), pieces ``[0, num_pieces)`` (the ids before
    the first sentinel or tag), sentinel index -> id, tag -> id, and pad/eos/unk ids."""

    size: int
    num_pieces: int
    sentinel_ids: dict[int, int]
    tag_ids: dict[str, int]
    core_ids: dict[str, int | None]

    @classmethod
    def canonical(cls, num_pieces: int) -> TokenLayout:
        return cls(size=num_pieces + NUM_SENTINELS + len(deid.TAGS), num_pieces=num_pieces,
                   sentinel_ids={i: num_pieces + NUM_SENTINELS - 1 - i for i in range(NUM_SENTINELS)},
                   tag_ids={tag: num_pieces + NUM_SENTINELS + k for k, tag in enumerate(deid.TAGS)},
                   core_ids=dict(T5_CORE_IDS))

    def is_canonical(self) -> bool:
        """True when every id this tokenizer has sits where the canonical layout puts it (a
        folder without tags, such as T5-Base itself, is canonical as far as it goes)."""
        canonical = TokenLayout.canonical(self.num_pieces)
        return (self.sentinel_ids == canonical.sentinel_ids
                and all(canonical.tag_ids[t] == i for t, i in self.tag_ids.items())
                and self.core_ids == canonical.core_ids)

    def describe(self) -> str:
        """One line for the user: sizes and where the special tokens are (no text)."""
        sentinels = (f"sentinels {min(self.sentinel_ids.values())}-{max(self.sentinel_ids.values())}"
                     if self.sentinel_ids else "no sentinels")
        tags = (f"{len(self.tag_ids)} DEID tags at {min(self.tag_ids.values())}-{max(self.tag_ids.values())}"
                if self.tag_ids else "no DEID tags")
        order = "canonical" if self.is_canonical() else "not canonical"
        return (f"{self.size} ids ({self.num_pieces} pieces, {sentinels}, {tags}; {order} layout), "
                f"pad/eos/unk = {self.core_ids['pad']}/{self.core_ids['eos']}/{self.core_ids['unk']}")

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "num_pieces": self.num_pieces,
                "sentinel_ids": {sentinel_token(i): j for i, j in sorted(self.sentinel_ids.items())},
                "tag_ids": dict(self.tag_ids), "core_ids": dict(self.core_ids)}


def layout_of(tokenizer: Tokenizer, where: str) -> TokenLayout:
    """The layout of a `tokenizers` Tokenizer. A partial set of sentinels is an error: span
    corruption needs all 100 or none (then they are appended)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    sentinels = {i: vocab[sentinel_token(i)] for i in range(NUM_SENTINELS) if sentinel_token(i) in vocab}
    if sentinels and len(sentinels) != NUM_SENTINELS:
        raise ValueError(f"{where}: has {len(sentinels)} of the {NUM_SENTINELS} <extra_id_*> sentinels; "
                         "expected all or none")
    tags = {tag: vocab[tag] for tag in deid.TAGS if tag in vocab}
    special = list(sentinels.values()) + list(tags.values())
    return TokenLayout(size=max(vocab.values()) + 1,
                       num_pieces=min(special) if special else max(vocab.values()) + 1,
                       sentinel_ids=sentinels, tag_ids=tags,
                       core_ids={k: vocab.get(token) for k, token in CORE_TOKENS.items()})


def read_tokenizer(hf_dir: str | os.PathLike) -> Tokenizer | None:
    """The folder's `tokenizer.json` as a `tokenizers` Tokenizer; None when it has none."""
    path = Path(hf_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser's message names the JSON problem, not any text
        raise ValueError(f"{path}: not a tokenizers file: {e}") from None


def read_layout(hf_dir: str | os.PathLike) -> TokenLayout | None:
    """The layout of an HF folder's tokenizer: from `tokenizer.json`, else T5's own for a
    folder holding only `spiece.model` (transformers adds the 100 sentinels after its pieces);
    None when the folder has no tokenizer at all."""
    hf_dir = Path(hf_dir)
    tokenizer = read_tokenizer(hf_dir)
    if tokenizer is not None:
        return layout_of(tokenizer, str(hf_dir / "tokenizer.json"))
    if (hf_dir / "spiece.model").is_file():
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((hf_dir / "spiece.model").read_bytes())
        layout = TokenLayout.canonical(len(proto.pieces))
        return dataclasses.replace(layout, size=layout.size - len(deid.TAGS), tag_ids={})
    return None


def check_against_model(layout: TokenLayout, rows: int, config: dict[str, Any], where: str) -> None:
    """The tokenizer and the embedding must agree: every id has a row, and pad/eos/unk (and the
    decoder start) are T5's 0/1/2, as the model config says."""
    problems = []
    if layout.size > rows:
        problems.append(f"the tokenizer has {layout.size} ids but the embedding only {rows} rows")
    if layout.core_ids != T5_CORE_IDS:
        problems.append(f"pad/eos/unk are {layout.core_ids}, T5 needs {T5_CORE_IDS}")
    for key, want in (("pad_token_id", 0), ("eos_token_id", 1), ("decoder_start_token_id", 0)):
        if config.get(key, want) != want:
            problems.append(f"config.json {key} is {config[key]}, the tokenizer's is {want}")
    if problems:
        raise ValueError(f"{where}: tokenizer and model disagree: " + "; ".join(problems))


def canonical_permutation(layout: TokenLayout, rows: int, where: str) -> tuple[np.ndarray, list[int]]:
    """`perm` with ``canonical_rows[i] = source_rows[perm[i]]`` for ``max(rows, round_up(S + 115))``
    rows, and the canonical ids no source token maps to (sentinels a folder lacked). Those take the
    source's unused rows in order; where none is left, ``perm`` is -1 (a new row for the caller to
    draw). With enough rows it is a true permutation of ``range(rows)``.

    Needs pieces ``[0, S)`` followed only by sentinels and tags."""
    from clinical_t5x.text.vocab import round_up

    canonical = TokenLayout.canonical(layout.num_pieces)
    known = set(layout.sentinel_ids.values()) | set(layout.tag_ids.values())
    stray = sorted(set(range(layout.num_pieces, layout.size)) - known)
    if stray:
        raise ValueError(f"{where}: ids {stray[:5]} after the pieces are neither sentinels nor DEID tags; "
                         "keep the folder's ids (no --canonical)")
    perm = np.full(max(rows, round_up(canonical.size)), -1, np.int64)
    perm[:layout.num_pieces] = np.arange(layout.num_pieces)
    for i, target in canonical.sentinel_ids.items():
        if i in layout.sentinel_ids:
            perm[target] = layout.sentinel_ids[i]
    for tag, target in canonical.tag_ids.items():
        if tag in layout.tag_ids:
            perm[target] = layout.tag_ids[tag]
    fresh = [int(i) for i in np.flatnonzero(perm[:canonical.size] < 0)]
    unused = sorted(set(range(rows)) - set(perm[perm >= 0].tolist()))
    empty = np.flatnonzero(perm < 0)
    perm[empty[:len(unused)]] = unused[:len(empty)]
    return perm, fresh


def write_permutation(path: Path, layout: TokenLayout, perm: np.ndarray, fresh: list[int]) -> None:
    """The record beside a permuted checkpoint: canonical row i came from source row perm[i]."""
    from clinical_t5x import owner_only

    with owner_only.open_file(path, "w") as out:
        json.dump({"source_layout": layout.to_json(),
                   "canonical_layout": TokenLayout.canonical(layout.num_pieces).to_json(),
                   "canonical_row_from_source_row": perm.tolist(),
                   "canonical_ids_without_source_token": fresh}, out, indent=1)
        out.write("\n")
