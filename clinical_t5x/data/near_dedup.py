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

import codecs
import dataclasses
import functools
import itertools
import re
from array import array
from collections.abc import Iterable

import numpy as np
import rensa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from clinical_t5x.data import deid
from clinical_t5x.data.mimic import SOURCES

_WORD = re.compile(r"\w+")
_NON_ASCII_WORDS = "clinical_t5x.near_dedup.non_ascii_words"  # codec error handler name
_CAPITAL_SIGMA = "\u03a3"
_MASK = " deid "  # one word for every hidden span
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: order matters in a window's hash


def _ascii_word_table() -> bytes:
    """A `bytes.translate` table: ASCII letters lowercased, other ASCII characters that `\\w`
    rejects made spaces, digits, `_` and every non-ASCII byte (part of a UTF-8 character) kept."""
    table = bytearray(range(256))
    for byte in range(128):
        char = chr(byte)
        table[byte] = ord(char.lower()) if _WORD.fullmatch(char) else ord(" ")
    return bytes(table)


_ASCII_WORDS = _ascii_word_table()


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


@functools.lru_cache(maxsize=4096)
def _non_ascii_words(run: str) -> bytes:
    """A run of non-ASCII characters lowercased, with the characters `\\w` rejects made
    spaces, in UTF-8. Runs repeat (a degree sign, a dash), so the answers are cached."""
    return "".join(char if _WORD.match(char) else " " for char in run.lower()).encode("utf-8", "surrogatepass")


def _encode_non_ascii(error: UnicodeError) -> tuple[bytes, int]:
    """The `_NON_ASCII_WORDS` codec error handler: the ASCII encoder hands it each run of
    non-ASCII characters whole, and writes back `_non_ascii_words` of it."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return _non_ascii_words(error.object[error.start:error.end]), error.end


codecs.register_error(_NON_ASCII_WORDS, _encode_non_ascii)


def words(text: str) -> list[bytes]:
    """Lowercased word tokens (`\\w+`, UTF-8) with every DEID placeholder, blank or tag as `deid`.

    The same tokens as `re.findall(r"\\w+", masked.lower())`, a few times faster: C-level
    ASCII encoding, `bytes.translate` and `split` cut the words, and only runs of non-ASCII
    characters reach Python. Lowercasing a run on its own is lowercasing it in its text, except
    for a capital sigma (final or not by its neighbours): a text holding one takes the regex.
    """
    masked = deid.mask(text, _MASK)
    if _CAPITAL_SIGMA in masked:
        return [word.encode("utf-8") for word in _WORD.findall(masked.lower())]
    return masked.encode("ascii", _NON_ASCII_WORDS).translate(_ASCII_WORDS).split()


def shingle_sets(notes: list[list[bytes]], size: int) -> list[list[bytes]]:
    """Each note's `size`-word windows (a shorter note is one window), each as 8 bytes.

    One rensa call hashes every word of every note; numpy combines each window's word hashes
    in order, for all notes at once (a per-note loop, or joining each window's words into a
    string, costs several times more). Every note needs at least one word.
    """
    hashes = rensa.RMinHash.hash_token_sets(notes)
    lengths = np.fromiter(map(len, hashes), dtype=np.int64, count=len(hashes))
    flat = np.fromiter(itertools.chain.from_iterable(hashes), dtype=np.uint64, count=int(lengths.sum()))
    starts = np.cumsum(lengths) - lengths
    counts = np.maximum(1, lengths - size + 1)  # windows per note
    short = np.flatnonzero(lengths < size)  # one window of all its words
    short_windows = np.empty(len(short), dtype=np.uint64)
    window, n = flat.copy(), len(flat)
    for offset in range(size):  # window[p]: the hash of words p .. p + offset
        done = lengths[short] == offset + 1
        short_windows[done] = window[starts[short[done]]]
        reach = n - offset - 1  # windows that can take one more word
        if offset + 1 < size and reach > 0:
            window[:reach] = window[:reach] * _MIX + flat[offset + 1:]  # wraps mod 2**64
    firsts = np.cumsum(counts) - counts  # each note's first window in the result
    picked = window[np.repeat(starts - firsts, counts) + np.arange(int(counts.sum()))]
    picked[firsts[short]] = short_windows
    tokens = picked.view("V8").tolist()  # 8-byte tokens: rensa hashes them again
    bounds = np.r_[firsts, len(tokens)].tolist()
    return [tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


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

    def add(self, source: str, notes: Iterable[tuple[int, int, str, bool]], options: NearOptions) -> None:
        """Sketches one source's notes, given as (row, subject, text, named by a downstream
        benchmark), all in one batch; a note with no words is skipped (nothing to match)."""
        batch = [(row, subject, named, tokens) for row, subject, text, named in notes if (tokens := words(text))]
        if not batch:
            return
        rows, subjects, named, tokens = zip(*batch)
        self.sources.extend([SOURCES.index(source)] * len(batch))
        self.rows.extend(rows)
        self.subjects.extend(subjects)
        self.sizes.extend(map(len, tokens))
        self.downstream.extend(named)
        self.minhashes += rensa.RMinHash.from_token_sets(shingle_sets(list(tokens), options.shingle_words),
                                                         options.num_perm, options.seed)

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
    index.insert_many(minhashes)
    pairs = {(key, other) for key, candidates in enumerate(index.query_all(minhashes)) for other in candidates
             if other > key and minhashes[key].jaccard(minhashes[other]) >= options.threshold}
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
