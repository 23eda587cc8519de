"""Vocabulary folders around a Hugging Face folder's own ``tokenizer.json`` (the released
Clinical-T5 models), read by `clinical_t5x.text.tokenizers_vocab.TokenizersVocabulary`.

Two layouts, never mixed silently:

- ``folder``: every id the source tokenizer has stays where it is (tags in whatever order
  ``add_tokens`` left them), so the released embedding rows stay paired with their tokens.
  A tokenizer without ``<extra_id_*>`` sentinels (Clinical-T5-Scratch/Large) gets all 100
  appended after its last id (``<extra_id_99>`` first, as T5 orders them), then any DEID tag
  it lacks; these ids never reuse an existing one, and are logged and recorded as ``appended``.
- ``canonical``: pieces keep their ids, sentinels and tags move to the canonical ids
  (`clinical_t5x.text.vocab`); pair it with ``import-hf --canonical``, which moves the rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer

from clinical_t5x import owner_only
from clinical_t5x.data import deid
from clinical_t5x.hf import token_layout
from clinical_t5x.text import vocab

log = logging.getLogger(__name__)


def _added_token(source: dict[str, Any] | None, content: str) -> AddedToken:
    """An added token keeping the source's matching flags; new ones are special, matched in
    the raw text (as this project's own tokenizers add sentinels and tags)."""
    if source is None:
        return AddedToken(content, special=True, normalized=False)
    return AddedToken(content, single_word=source["single_word"], lstrip=source["lstrip"],
                      rstrip=source["rstrip"], normalized=source["normalized"], special=source["special"])


def _add(tokenizer: Tokenizer, tokens: list[AddedToken], first_id: int, where: str) -> dict[str, int]:
    """Add `tokens` one by one at ``first_id, first_id + 1, ...``; fail if the library put any elsewhere."""
    for token in tokens:
        (tokenizer.add_special_tokens if token.special else tokenizer.add_tokens)([token])
    got = {t.content: tokenizer.token_to_id(t.content) for t in tokens}
    want = {t.content: first_id + k for k, t in enumerate(tokens)}
    if got != want:
        raise RuntimeError(f"{where}: tokenizers placed added tokens at unexpected ids")
    return got


def append_missing(tokenizer: Tokenizer, layout: token_layout.TokenLayout, where: str) -> dict[str, int]:
    """Append the sentinels (all 100 when there are none) and the DEID tags the tokenizer lacks
    after its last id; returns token -> id of what was appended."""
    tokens = []
    if not layout.sentinel_ids:
        tokens += [token_layout.sentinel_token(i) for i in reversed(range(vocab.NUM_SENTINELS))]
    tokens += [tag for tag in deid.TAGS if tag not in layout.tag_ids]
    if not tokens:
        return {}
    appended = _add(tokenizer, [_added_token(None, t) for t in tokens], layout.size, where)
    log.warning("%s: appended %d tokens the source lacks at ids %d-%d (%s): their embedding rows are new",
                where, len(tokens), layout.size, layout.size + len(tokens) - 1,
                "sentinels" if not layout.sentinel_ids else "DEID tags")
    return appended


def canonical_tokenizer(tokenizer: Tokenizer, layout: token_layout.TokenLayout, where: str) -> Tokenizer:
    """The same pieces with the sentinels and tags re-added at the canonical ids (each tag
    keeping its matching flags). Needs the added tokens to come after the model's pieces."""
    data = json.loads(tokenizer.to_str())
    model_size = tokenizer.get_vocab_size(with_added_tokens=False)
    canonical = token_layout.TokenLayout.canonical(layout.num_pieces)
    in_model = {i: layout.sentinel_ids[i] for i in layout.sentinel_ids if layout.sentinel_ids[i] < model_size}
    if model_size != layout.num_pieces and in_model != canonical.sentinel_ids:
        raise ValueError(f"{where}: the model's own vocabulary holds sentinels or tags at non-canonical ids; "
                         "keep the folder's ids (no --canonical)")
    old = {t["content"]: t for t in data["added_tokens"]}
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < model_size]
    out = Tokenizer.from_str(json.dumps(data))
    tokens = [] if in_model else [token_layout.sentinel_token(i) for i in reversed(range(vocab.NUM_SENTINELS))]
    tokens += list(deid.TAGS)
    _add(out, [_added_token(old.get(t), t) for t in tokens], model_size, where)
    return out


def folds_case(tokenizer: Tokenizer) -> bool:
    normalizer = tokenizer.normalizer
    return normalizer is not None and normalizer.normalize_str("ABC xyz") == "abc xyz"


def write(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, canonical: bool) -> Path:
    """A `tokenizers`-backed vocabulary folder from an HF folder's ``tokenizer.json``."""
    hf_dir, out = Path(hf_dir), Path(out_dir)
    where = str(hf_dir / "tokenizer.json")
    tokenizer = token_layout.read_tokenizer(hf_dir)
    if tokenizer is None:
        raise FileNotFoundError(f"{where} is missing: --from-hf needs tokenizer.json or spiece.model")
    source = token_layout.layout_of(tokenizer, where)
    if source.core_ids != token_layout.T5_CORE_IDS:
        raise ValueError(f"{where}: pad/eos/unk are {source.core_ids}, T5 needs {token_layout.T5_CORE_IDS}")
    appended: dict[str, int] = {}
    if canonical:
        tokenizer = canonical_tokenizer(tokenizer, source, where)
    else:
        appended = append_missing(tokenizer, source, where)
    layout = token_layout.layout_of(tokenizer, where)
    owner_only.make_dir(out)
    from transformers import PreTrainedTokenizerFast

    # The generic fast class: AutoTokenizer then runs tokenizer.json as it is, where
    # transformers 5's T5Tokenizer would rebuild a SentencePiece-style pipeline around its vocabulary.
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(out)
    config = {
        "format": vocab.CONFIG_FORMAT,
        "backend": vocab.TOKENIZERS_BACKEND,
        "source": "huggingface",
        "origin": hf_dir.resolve().name,
        "layout": "canonical" if canonical else "folder",
        "lowercase": folds_case(tokenizer),
        "num_pieces": layout.num_pieces,
        "num_sentinels": vocab.NUM_SENTINELS,
        "sentinel_ids": layout.to_json()["sentinel_ids"],
        "tags": list(deid.TAGS),
        "tag_ids": layout.tag_ids,
        "appended": appended,
        "source_layout": source.to_json(),
        "vocab_size": layout.size,
        "model_vocab_size": vocab.round_up(layout.size),
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
    }
    with owner_only.open_file(out / vocab.CONFIG_NAME, "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
    for path in out.iterdir():
        path.chmod(0o600)
    return out
