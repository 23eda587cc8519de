"""Boilerplate lines: lines that recur in more than a fraction of notes (`prepare --dedup-lines`).

Copy-forward templates repeat the same lines across thousands of notes ("Plan: continue current
management", form headers); a model learns nothing from the ten-thousandth copy. A line is
compared by its words after DEID normalisation (`near_dedup.words`: placeholders, blanks and
tags are one word, case ignored), as a 64-bit BLAKE2b hash; blank lines never count.

Counting: the first pass hashes each kept note's distinct lines; each chunk returns its
(hash, notes) counts and the reading process merges them (`LineCounts`), compacting as it goes.
Memory is 16 bytes per distinct line in the corpus (never text). The second pass drops the
lines whose hash is in `frequent(fraction)` from every kept note, counting them.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from clinical_t5x.data.near_dedup import words

_PERSON = b"ct5x-lines"
_COMPACT_EVERY = 1 << 22  # pending entries before the merged counts are compacted


def line_hash(line: str) -> int | None:
    """The hash a line is compared by; None for a line without words."""
    tokens = words(line)
    if not tokens:
        return None
    digest = hashlib.blake2b(b" ".join(tokens), digest_size=8, person=_PERSON)
    return int.from_bytes(digest.digest(), "little")


def note_lines(text: str) -> set[int]:
    """The distinct line hashes of one note."""
    return {h for line in text.splitlines() if (h := line_hash(line)) is not None}


@dataclasses.dataclass
class LineCounts:
    """Notes per line hash, and notes counted (picklable; `merge` adds another's)."""

    notes: int = 0
    hashes: list = dataclasses.field(default_factory=list)  # arrays of uint64
    counts: list = dataclasses.field(default_factory=list)  # arrays of int64, aligned
    _pending: int = 0

    def add_note(self, text: str) -> None:
        self.notes += 1
        lines = note_lines(text)
        if lines:
            self.hashes.append(np.fromiter(lines, dtype=np.uint64, count=len(lines)))
            self.counts.append(np.ones(len(lines), dtype=np.int64))

    def merge(self, other: LineCounts) -> LineCounts:
        self.notes += other.notes
        other.compact()
        self.hashes += other.hashes
        self.counts += other.counts
        self._pending += sum(map(len, other.hashes))
        if self._pending >= _COMPACT_EVERY:
            self.compact()
        return self

    def compact(self) -> None:
        """One sorted array of distinct hashes with their summed counts."""
        if len(self.hashes) <= 1:
            return
        hashes, counts = np.concatenate(self.hashes), np.concatenate(self.counts)
        unique, inverse = np.unique(hashes, return_inverse=True)
        self.hashes, self.counts = [unique], [np.bincount(inverse, weights=counts).astype(np.int64)]
        self._pending = 0

    def frequent(self, fraction: float) -> frozenset[int]:
        """Hashes of the lines in more than `fraction` of the notes counted."""
        self.compact()
        if not self.hashes:
            return frozenset()
        return frozenset(self.hashes[0][self.counts[0] > fraction * self.notes].tolist())


def remove(text: str, frequent: frozenset[int]) -> tuple[str, int]:
    """`text` without its frequent lines, and how many lines went."""
    kept, removed = [], 0
    for line in text.splitlines(keepends=True):
        if line_hash(line) in frequent:
            removed += 1
        else:
            kept.append(line)
    return "".join(kept), removed
