"""Near-duplicate notes: MinHash sketches of word shingles, LSH candidates, one note kept per cluster.

Clinical notes are copied forward day after day, and MIMIC-III and MIMIC-IV hold the same
admissions' discharge summaries de-identified twice. Duplicated training text drives
memorisation, so `prepare --dedup near` keeps one note of every group of near-identical notes.

A note becomes its set of `shingle_words`-word shingles, taken after every DEID placeholder,
blank and tag is masked to one token (`deid.mask`) and the text lowercased, so two
de-identifications of one note look alike. `rensa` (a Rust MinHash/LSH library) sketches each
set with `num_perm` permutations; its LSH index (`bands` bands of `num_perm / bands` rows)
proposes candidate pairs, and a pair counts as a duplicate only when the sketches' estimated
Jaccard similarity reaches `threshold` (so LSH's false candidates never drop a note). Clusters
are the connected components of those pairs; each keeps one note: the MIMIC-IV copy when the
cluster spans both releases (the newer de-identification), otherwise the longest (most words),
then the latest (last in its file).

Memory: a sketch is `num_perm` 32-bit values (512 bytes at 128) plus its Python object; the
LSH index adds one entry per band. Only the reading process holds them (see docs/dedup.md for
the measured size per million notes); workers send each chunk's sketches and keep nothing.
"""

from __future__ import annotations

import dataclasses
import re
from array import array

import numpy as np
import rensa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from clinical_t5x.data import deid
from clinical_t5x.data.mimic import SOURCES

_WORD = re.compile(r"\w+")
_MASK = " deid "  # one word for every hidden span
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: order matters in a window's hash


@dataclasses.dataclass(frozen=True)
class NearOptions:
    """The near-duplicate parameters (`prepare --near-*` flags)."""

    shingle_words: int = 5
    num_perm: int = 128
    bands: int = 16
    threshold: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shingle_words < 1 or self.num_perm < 1 or self.bands < 1:
            raise ValueError("near-duplicate shingle words, permutations and bands must be >= 1")
        if self.num_perm % self.bands:
            raise ValueError(f"near-duplicate permutations ({self.num_perm}) must be a multiple of "
                             f"the bands ({self.bands})")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {self.threshold}")


def words(text: str) -> list[str]:
    """Lowercased word tokens with every DEID placeholder, blank or tag as the word `deid`."""
    return _WORD.findall(deid.mask(text, _MASK).lower())


def shingles(tokens: list[str], size: int) -> list[bytes]:
    """The `size`-word windows of `tokens` (a shorter text is one window), each as 8 bytes.

    rensa hashes the words (one call), numpy combines each window's word hashes in order;
    about twice as fast as joining the words of every window into a string.
    """
    if not tokens:
        return []
    hashes = np.array(rensa.RMinHash.hash_token_sets([tokens])[0], dtype=np.uint64)
    count = max(1, len(hashes) - size + 1)
    window = hashes[:count].copy()
    for offset in range(1, min(size, len(hashes))):
        window = window * _MIX + hashes[offset:offset + count]  # wraps modulo 2**64
    data = window.tobytes()
    return [data[i:i + 8] for i in range(0, len(data), 8)]


def sketch(tokens: list[str], options: NearOptions) -> rensa.RMinHash:
    minhash = rensa.RMinHash(num_perm=options.num_perm, seed=options.seed)
    minhash.update(shingles(tokens, options.shingle_words))
    return minhash


@dataclasses.dataclass
class Sketches:
    """Sketched notes: where each is (source, row in its file, subject), its length in words,
    whether a downstream benchmark names it, and its MinHash. Picklable; `merge` appends."""

    sources: array = dataclasses.field(default_factory=lambda: array("b"))  # index into SOURCES
    rows: array = dataclasses.field(default_factory=lambda: array("q"))
    subjects: array = dataclasses.field(default_factory=lambda: array("q"))
    sizes: array = dataclasses.field(default_factory=lambda: array("q"))
    downstream: array = dataclasses.field(default_factory=lambda: array("b"))
    minhashes: list = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, source: str, row: int, subject: int, text: str, options: NearOptions,
            downstream: bool = False) -> None:
        """Sketches one note; a note with no words is skipped (nothing to match)."""
        tokens = words(text)
        if not tokens:
            return
        self.sources.append(SOURCES.index(source))
        self.rows.append(row)
        self.subjects.append(subject)
        self.sizes.append(len(tokens))
        self.downstream.append(downstream)
        self.minhashes.append(sketch(tokens, options))

    def merge(self, other: Sketches) -> Sketches:
        for name in ("sources", "rows", "subjects", "sizes", "downstream"):
            getattr(self, name).extend(getattr(other, name))
        self.minhashes += other.minhashes
        return self

    def source_names(self) -> list[str]:
        return [SOURCES[i] for i in self.sources]


def similar_pairs(sketches: Sketches, options: NearOptions) -> np.ndarray:
    """(i, j) index pairs, i < j, whose estimated Jaccard similarity reaches the threshold.

    LSH proposes candidates; each is checked on the full sketches, so the result does not
    depend on which band caught it. Sorted, so the same input gives the same pairs.
    """
    index = rensa.RMinHashLSH(threshold=options.threshold, num_perm=options.num_perm, num_bands=options.bands)
    minhashes = sketches.minhashes
    for key, minhash in enumerate(minhashes):
        index.insert(key, minhash)
    pairs = {(key, other) for key, minhash in enumerate(minhashes) for other in index.query(minhash)
             if other > key and minhash.jaccard(minhashes[other]) >= options.threshold}
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


@dataclasses.dataclass(frozen=True)
class Clusters:
    """The outcome among the live notes: indices of notes to drop and cluster sizes."""

    losers: np.ndarray  # indices into the sketches
    histogram: dict[int, int]  # cluster size (>= 2) -> clusters


def resolve(sketches: Sketches, pairs: np.ndarray, live: np.ndarray) -> Clusters:
    """Clusters the `live` notes (a boolean mask) by `pairs` and keeps one of each.

    Notes that are not live (already dropped for another reason) neither join a cluster nor
    link two others, so a dropped note never costs a kept one its place.
    """
    n = len(sketches)
    if n == 0:
        return Clusters(losers=np.zeros(0, np.int64), histogram={})
    edges = pairs[live[pairs[:, 0]] & live[pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    sources = np.frombuffer(sketches.sources, dtype=np.int8)
    rows = np.frombuffer(sketches.rows, dtype=np.int64)
    length = np.frombuffer(sketches.sizes, dtype=np.int64)
    is_mimic4 = sources != SOURCES.index("mimic3")
    order = np.lexsort((rows, sources, length, is_mimic4, labels))  # each cluster's keeper last
    ordered = labels[order]
    keeper = np.r_[ordered[:-1] != ordered[1:], True]
    losers = np.sort(order[(sizes[ordered] > 1) & ~keeper])
    values, counts = np.unique(sizes[sizes > 1], return_counts=True)
    return Clusters(losers=losers, histogram={int(v): int(c) for v, c in zip(values, counts)})
