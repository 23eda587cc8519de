"""The Hugging Face tokenizer that matches a clinical vocabulary id for id.

One builder for the vocabulary folders and the HF export. It instantiates `T5Tokenizer`
(transformers 5's fast, tokenizers-backed T5 tokenizer; `T5TokenizerFast` is the same class) from
the SentencePiece pieces, scores and character map explicitly: passing only ``vocab_file`` is
silently ignored by transformers 5, and SentencePiece's own notion of user-defined symbols does not
survive conversion. The unigram vocabulary lists the sentinels and tags at their ids (score 0,
like T5's own tokenizer.json), so that `AutoTokenizer.from_pretrained`, which rebuilds the
pipeline from tokenizer.json's vocabulary and character map, gives the same ids.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from sentencepiece import sentencepiece_model_pb2
from transformers import T5TokenizerFast

from clinical_t5x import owner_only
from clinical_t5x.data import deid
from clinical_t5x.text.vocab import NUM_SENTINELS, SPIECE_NAME, added_tokens, sentinel_token

# Normalisation rules that fold case: a lower-cased vocabulary carries its lower-casing here.
CASE_FOLDING_RULES = ("nmt_nfkc_cf", "nfkc_cf")


def read_spiece(path: str | os.PathLike) -> sentencepiece_model_pb2.ModelProto:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


def folds_case(proto: sentencepiece_model_pb2.ModelProto) -> bool:
    return proto.normalizer_spec.name in CASE_FOLDING_RULES


def _spiece_path(vocab_dir_or_spiece: str | os.PathLike) -> Path:
    path = Path(vocab_dir_or_spiece)
    return path / SPIECE_NAME if path.is_dir() else path


def build_hf_tokenizer(vocab_dir_or_spiece: str | os.PathLike, lowercase: bool | None = None,
                       tags: Sequence[str] = deid.TAGS) -> T5TokenizerFast:
    """T5TokenizerFast with the pieces, then the sentinels and the DEID tags as special tokens.

    `lowercase` (if given) must agree with the model: lower-casing is part of its character map.
    `tags=()` gives T5's own tokenizer (pieces and sentinels), as t5-base ships it.
    """
    path = _spiece_path(vocab_dir_or_spiece)
    proto = read_spiece(path)
    if lowercase is not None and lowercase != folds_case(proto):
        raise ValueError(f"{path}: lowercase={lowercase}, but its normaliser is {proto.normalizer_spec.name!r}")
    num_pieces = len(proto.pieces)
    vocab = [(p.piece, p.score) for p in proto.pieces]
    vocab += [(token, 0.0) for token, _ in added_tokens(num_pieces, tags)]
    tokenizer = T5TokenizerFast(
        vocab=vocab,
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap or None,
        extra_ids=NUM_SENTINELS,
        additional_special_tokens=[sentinel_token(i) for i in range(NUM_SENTINELS)] + list(tags),
    )
    _check_ids(tokenizer, num_pieces, path, tags)
    return tokenizer


def _check_ids(tokenizer: T5TokenizerFast, num_pieces: int, path: Path, tags: Sequence[str]) -> None:
    """Fail loudly if transformers placed any added token elsewhere than the id layout says."""
    expected = dict(added_tokens(num_pieces, tags))
    got = dict(zip(expected, tokenizer.convert_tokens_to_ids(list(expected))))
    wrong = sorted(token for token in expected if got[token] != expected[token])
    if wrong or len(tokenizer) != num_pieces + len(expected):
        raise RuntimeError(f"{path}: transformers put {wrong[:5]} at unexpected ids "
                           f"(tokenizer length {len(tokenizer)}, expected {num_pieces + len(expected)})")


@owner_only.private_umask()
def save_hf_tokenizer(vocab_dir_or_spiece: str | os.PathLike, out_dir: str | os.PathLike,
                      lowercase: bool | None = None) -> list[Path]:
    """Write the HF tokenizer files (and a copy of spiece.model) into `out_dir`, owner-only from
    creation (transformers writes them itself); returns the paths."""
    spiece = _spiece_path(vocab_dir_or_spiece)
    out = owner_only.make_dir(out_dir)
    written = [Path(p) for p in build_hf_tokenizer(spiece, lowercase).save_pretrained(out)]
    target = out / SPIECE_NAME
    if not target.exists() or not os.path.samefile(spiece, target):
        shutil.copyfile(spiece, target)
    return sorted({p for p in written if p.is_file()} | {target})
