"""Initialise a model from an existing checkpoint (imported T5-Base/SciFive, or any t5x one).

T5-Base and SciFive know T5's 32,000 pieces and 100 sentinels (32,100 ids) but not our DEID
tags, which sit right after them (docs/architecture.md). A random row would make each tag an
outlier the model first has to tame; starting each tag's row at the mean embedding of the
word pieces of what it stands for (`[Name]` -> "name") gives it a meaningful start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# What each tag stands for, in plain words whose pieces every T5-like vocabulary has.
TAG_WORDS: dict[str, str] = {
    "[Name]": "name", "[Reg#]": "record number", "[Company]": "hospital",
    "[LOC]": "location", "[Age]": "age", "[#]": "number", "[DR]": "date range",
    "[State]": "state", "[CI]": "contact info", "[Country]": "country", "[URL]": "url",
    "[YR]": "year", "[MO]": "month", "[DAY]": "day", "[MISC]": "other",
}
# (path in the params tree, axis that indexes the vocabulary)
VOCAB_PARAMS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("token_embedder", "embedding"), 0),
    (("decoder", "logits_dense", "kernel"), 1),
)


# Written beside an imported checkpoint (`import-hf`): the DEID tag ids whose rows the source
# model trained (a released Clinical-T5 has them; T5-Base does not). Those rows are kept, never
# re-initialised from pieces, whatever `known_rows` says.
TRAINED_TAGS_FILE = "trained_tag_ids.json"


def write_trained_tag_ids(checkpoint_root, tag_ids: Iterable[int]) -> None:
    """Records, beside an imported checkpoint, which tag ids carry the source's trained rows."""
    from clinical_t5x import owner_only

    with owner_only.open_file(checkpoint_root / TRAINED_TAGS_FILE, "w") as out:
        json.dump({"trained_tag_ids": sorted(int(i) for i in tag_ids)}, out)
        out.write("\n")


def trained_tag_ids(init_checkpoint: str) -> frozenset[int]:
    """The tag ids `write_trained_tag_ids` recorded beside `init_checkpoint`'s folder (a step
    folder such as `INIT_DIR/checkpoint_0`, or INIT_DIR itself); empty when there is no record."""
    from etils import epath

    step = epath.Path(init_checkpoint)
    for folder in (step.parent, step):
        record = folder / TRAINED_TAGS_FILE
        if record.exists():
            return frozenset(json.loads(record.read_text())["trained_tag_ids"])
    return frozenset()


def _flat(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _unflat(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def merge_vocab_rows(shape: tuple[int, ...], source: np.ndarray, axis: int, known_rows: int,
                     tag_pieces: Mapping[int, list[int]], seed: int = 0
                     ) -> tuple[np.ndarray, list[int]]:
    """An array of `shape` filled from `source` along its vocabulary `axis`: ids the source
    has are copied, tag ids at or past `known_rows` get the mean of their pieces' vectors,
    ids past the source's end are drawn at the source's scale (deterministic by `seed`).

    Returns the merged array and the tag ids that were initialised from their pieces.
    """
    src = np.moveaxis(np.asarray(source, dtype=np.float32), axis, 0)
    rows_shape = (shape[axis],) + tuple(np.delete(np.asarray(shape), axis))
    if src.shape[1:] != rows_shape[1:]:
        raise ValueError(f"width {src.shape[1:]} of the source does not match {rows_shape[1:]}")
    out = np.random.default_rng(seed).normal(0.0, float(src.std()), rows_shape).astype(np.float32)
    shared = min(len(src), len(out))
    out[:shared] = src[:shared]
    from_pieces = []
    for tag_id, pieces in sorted(tag_pieces.items()):
        if tag_id < known_rows or tag_id >= len(out):
            continue
        usable = [p for p in pieces if p < min(known_rows, len(src))]
        if usable:
            out[tag_id] = src[usable].mean(axis=0)
            from_pieces.append(tag_id)
    return np.moveaxis(out, 0, axis), from_pieces


def tag_piece_ids(tag_ids: Mapping[str, int], encode: Callable[[str], list[int]]) -> dict[int, list[int]]:
    """Tag id -> the piece ids of the words the tag stands for (case as the vocabulary has it)."""
    return {tag_id: [int(i) for i in encode(TAG_WORDS.get(tag, tag.strip("[]").lower()))]
            for tag, tag_id in tag_ids.items()}


def init_params(model_params: Mapping[str, Any], source_params: Mapping[str, Any],
                known_rows: int | None, tag_pieces: Mapping[int, list[int]]) -> dict[str, Any]:
    """Host parameters for a model whose parameters (arrays or shape structs) are
    `model_params`, every tensor taken from `source_params` (same names and shapes;
    vocabulary-indexed tensors may differ in vocabulary size).

    `known_rows`: how many leading vocabulary ids the source was trained with (32,100 for
    T5-Base/SciFive); None when the source shares our vocabulary. Missing or misshapen
    tensors are an error naming them: a silent partial load would waste a run.
    """
    fresh, source = _flat(model_params), _flat(source_params)
    missing = sorted("/".join(p) for p in fresh if p not in source)
    if missing:
        raise ValueError(f"init checkpoint lacks {len(missing)} parameters, e.g. {missing[:5]}")
    vocab_axes = dict(VOCAB_PARAMS)
    merged = {}
    for path, value in fresh.items():
        src = np.asarray(source[path])
        if path in vocab_axes:
            axis = vocab_axes[path]
            rows = src.shape[axis] if known_rows is None else known_rows
            merged[path], from_pieces = merge_vocab_rows(tuple(value.shape), src, axis, rows,
                                                         tag_pieces)
            if from_pieces:
                log.info("%s: rows %s (DEID tags the source lacks) initialised from the mean "
                         "embedding of their word pieces", "/".join(path), from_pieces)
        elif src.shape != tuple(value.shape):
            raise ValueError(f"init checkpoint's {'/'.join(path)} has shape {src.shape}, "
                             f"the model needs {tuple(value.shape)}")
        else:
            merged[path] = src.astype(value.dtype)
    return _unflat(merged)
