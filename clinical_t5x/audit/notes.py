"""The notes an audit looks at: a seeded sample of one split of a prepared dir, by id.

Notes are chosen by a keyed hash of (seed, source, note_id), smallest first, so the sample does
not depend on the shard layout or the number of prepare workers, and a split of any size is
read once while holding only the sample. Canary host notes are left out: their canaries are
measured by exposure, and would otherwise inflate the membership and extraction figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import os
from pathlib import Path
from typing import Collection

from clinical_t5x.data import shards


@dataclasses.dataclass(frozen=True)
class Note:
    source: str
    note_id: str
    subject_id: int
    text: str


def _key(seed: int, source: str, note_id: str) -> bytes:
    return hashlib.blake2b(f"{source}/{note_id}".encode(), digest_size=8, key=str(seed).encode(),
                           person=b"ct5x-audit").digest()


def sample(prepared_dir: str | os.PathLike, split: str, count: int, seed: int,
           exclude: Collection[tuple[str, str]] = ()) -> list[Note]:
    """Up to `count` notes of `split`, in hash order; `exclude` holds (source, note_id) pairs."""
    paths = sorted((Path(prepared_dir) / split).glob("*.tfrecord"))
    if not paths:
        raise FileNotFoundError(f"{Path(prepared_dir) / split}: no shards (not a prepared dir?)")
    records = (r for path in paths for r in shards.read_examples(path)
               if (r["source"], r["note_id"]) not in exclude)
    chosen = heapq.nsmallest(count, records, key=lambda r: _key(seed, r["source"], r["note_id"]))
    return [Note(r["source"], r["note_id"], r["subject_id"], r["text"]) for r in chosen]
