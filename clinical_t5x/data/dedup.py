"""Re-saved duplicate notes in MIMIC-III, found in memory bounded by keys, not text.

A MIMIC-III note edited after saving appears again with the same CHARTTIME, SUBJECT_ID,
CATEGORY and CGID; Clinical-T5 kept only the copy stored last (latest STORETIME). Rows with
any of those columns empty are never duplicates (they are kept).

Streaming in two passes: the first pass over the file feeds every candidate row's key,
STORETIME and row number to `add`; this keeps a 64-bit hash of the key, the time and the
row number in three arrays (24 bytes a row, never the note text: ~50 MB for MIMIC-III's
2.1 M notes). `losers()` sorts them once and returns the row numbers to drop, which the
second pass skips. Two distinct keys sharing a 64-bit BLAKE2b hash would be taken as one;
with 2 M keys the chance of that is about 1e-7.

Ties: equal STORETIME keeps the later row in the file; a missing or unparseable STORETIME
loses to any stored time.
"""

from __future__ import annotations

import datetime
import hashlib
from array import array

import numpy as np

_EPOCH = datetime.datetime(1, 1, 1)
_SECOND = datetime.timedelta(seconds=1)
_NO_TIME = -1


def storetime_seconds(value: str) -> int:
    """ISO date-time -> seconds since year 1 (sortable); -1 when empty or unparseable.

    A time with a UTC offset counts as its UTC time (naive ones, as MIMIC stores, as they are).
    """
    try:
        time = datetime.datetime.fromisoformat(value)
        if time.tzinfo is not None:
            time = time.astimezone(datetime.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return _NO_TIME
    return (time - _EPOCH) // _SECOND


class ResavedDuplicates:
    """Collects (key, STORETIME, row) of candidate rows; `losers()` names the rows to drop."""

    def __init__(self) -> None:
        self._keys = array("Q")
        self._times = array("q")
        self._rows = array("q")

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, key: str, storetime: str, row: int) -> None:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self._keys.append(int.from_bytes(digest, "little"))
        self._times.append(storetime_seconds(storetime))
        self._rows.append(row)

    def merge(self, other: ResavedDuplicates) -> ResavedDuplicates:
        """Adds the rows `other` collected (e.g. from another chunk or worker)."""
        self._keys.extend(other._keys)
        self._times.extend(other._times)
        self._rows.extend(other._rows)
        return self

    def losers(self) -> frozenset[int]:
        """Rows that a later-stored row with the same key supersedes."""
        if not self._rows:
            return frozenset()
        keys = np.frombuffer(self._keys, dtype=np.uint64)
        times = np.frombuffer(self._times, dtype=np.int64)
        rows = np.frombuffer(self._rows, dtype=np.int64)
        order = np.lexsort((rows, times, keys))  # by key, then time, then row: winner last
        sorted_keys = keys[order]
        superseded = sorted_keys[:-1] == sorted_keys[1:]
        return frozenset(rows[order[:-1][superseded]].tolist())
