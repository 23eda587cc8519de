"""Near-duplicate notes: MinHash sketches of word shingles, LSH candidates, one note kept per cluster.

Clinical notes are copied forward day after day, and MIMIC-III and MIMIC-IV hold the same
admissions' discharge summaries de-identified twice. Duplicated training text drives
memorisation, so `prepare --dedup near` keeps one note of every group of near-identical notes.

A note becomes its set of `shingle_words`-word shingles, taken after every DEID placeholder,
blank and tag is masked to one token (`deid.mask`) and the text lowercased, so two
de-identifications of one note look alike. `rensa` (a Rust MinHash library) sketches each set
with `num_perm` permutations. LSH with `bands` bands of `num_perm / bands` rows proposes
candidate pairs (notes whose digests agree on a whole band), and a pair counts as a duplicate
only when the sketches' estimated Jaccard similarity reaches `threshold` (so LSH's false
candidates never drop a note). Clusters are the connected components of those pairs; each
keeps one note: the MIMIC-IV copy when the cluster spans both releases (the newer
de-identification), otherwise the longest (most words), then the latest (last in its file).

Why the banding is numpy and not rensa's `RMinHashLSH`: rensa 0.5.0 answers candidate pairs
only for `RMinHash` objects, one Python object per note, which workers must build from one
bytes token per shingle; its object-free digest matrix cannot be pickled to the reading
process nor queried for pairs. So workers send plain digest arrays, and the reading process
buckets each band the way `RMinHashLSH` does (a 64-bit hash of the band's values) with a sort.

Memory: a sketch is `num_perm` 32-bit values (512 bytes at 128) in a numpy array. Only the
reading process holds them (see docs/dedup.md for the measured size per million notes);
workers send each chunk's sketches and keep nothing.
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
_FMIX = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_SPACE = ord(" ")
# _LOW_BYTES[k]: the low k bytes of a little-endian 8-byte load (k = 0 .. 8)
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
_PAIR_BLOCK = 1 << 16  # candidate pairs checked at once (bounds the check's memory)


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


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, elementwise: a bijection that spreads every input bit
    over the output (rensa feeds the hashes straight into its permutations)."""
    shift, m1, m2 = _FMIX
    h = h ^ (h >> shift)
    h *= m1
    h ^= h >> shift
    h *= m2
    h ^= h >> shift
    return h


def _masked_bytes(text: str) -> bytes:
    """The text masked (`deid.mask`) and encoded so that `bytes.translate(_ASCII_WORDS)` leaves
    its words lowercased and everything else spaces.

    C-level ASCII encoding, and only runs of non-ASCII characters reach Python (lowercasing a
    run on its own is lowercasing it in its text, except for a capital sigma, final or not by
    its neighbours: a text holding one is cut by the regex and its words joined by spaces).
    """
    masked = deid.mask(text, _MASK)
    if _CAPITAL_SIGMA in masked:
        return b" ".join(word.encode("utf-8") for word in _WORD.findall(masked.lower()))
    return masked.encode("ascii", _NON_ASCII_WORDS)


def words(text: str) -> list[bytes]:
    """Lowercased word tokens (`\\w+`, UTF-8) with every DEID placeholder, blank or tag as `deid`.

    The same tokens as `re.findall(r"\\w+", masked.lower())`, a few times faster (see
    `_masked_bytes`).
    """
    return _masked_bytes(text).translate(_ASCII_WORDS).split()


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of every word (as `words` cuts them) of every text, in order, and each
    text's number of words; equal words get equal hashes, different words different ones (but
    with ~2**-64 odds for words over 8 bytes).

    All texts at once and no Python object per word: the texts' `_masked_bytes` are joined by
    spaces and translated in one buffer, numpy finds the words (runs of non-spaces) and loads
    each word's bytes 8 at a time (unaligned little-endian loads, the bytes past the word
    masked off). A word of up to 8 bytes hashes to `_fmix64` of its bytes (no byte is zero, so
    no two such words collide); a longer one folds in each further 8 bytes with `_fmix64`.
    """
    parts = [_masked_bytes(text) for text in texts]
    spans = np.fromiter((len(part) + 1 for part in parts), dtype=np.int64, count=len(parts))
    text_starts = np.cumsum(spans) - spans
    buffer = b" ".join(parts).translate(_ASCII_WORDS) + b" " * 8  # room for the last 8-byte load
    in_word = np.zeros(len(buffer) + 1, dtype=np.int8)
    np.not_equal(np.frombuffer(buffer, dtype=np.uint8), _SPACE, out=in_word[1:].view(bool))
    edges = np.flatnonzero(np.diff(in_word))  # word starts and ends, alternating
    starts, lengths = edges[0::2], edges[1::2] - edges[0::2]
    loads = np.ndarray((len(buffer) - 7,), dtype="<u8", buffer=buffer, strides=(1,))
    hashes = _fmix64(loads[starts] & _LOW_BYTES[np.minimum(lengths, 8)])
    longer, offset = np.flatnonzero(lengths > 8), 8
    while len(longer):
        block = loads[starts[longer] + offset] & _LOW_BYTES[np.minimum(lengths[longer] - offset, 8)]
        hashes[longer] = _fmix64(hashes[longer] ^ block)
        offset += 8
        longer = longer[lengths[longer] > offset]
    counts = np.diff(np.searchsorted(starts, np.r_[text_starts, len(buffer)]))
    return hashes, counts


def shingle_hashes(hashes: np.ndarray, counts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each note's `size`-word windows (a shorter note is one window of all its words) as
    64-bit hashes, from its word hashes (`word_hashes`; every count >= 1), all notes at once.

    Returns the flat window hashes and the offsets of each note's first window (plus the
    total), as rensa's `digest_matrix_from_flat_token_hashes` takes them. A window's hash
    combines its word hashes in order, then `_fmix64`.
    """
    n = len(hashes)
    starts = np.cumsum(counts) - counts
    windows_per_note = np.maximum(1, counts - size + 1)
    short = np.flatnonzero(counts < size)  # one window of all its words
    short_windows = np.empty(len(short), dtype=np.uint64)
    window = hashes.copy()
    for offset in range(size):  # window[p]: the hash of words p .. p + offset
        done = counts[short] == offset + 1
        short_windows[done] = window[starts[short[done]]]
        reach = n - offset - 1  # windows that can take one more word
        if offset + 1 < size and reach > 0:
            window[:reach] = window[:reach] * _MIX + hashes[offset + 1:]  # wraps mod 2**64
    firsts = np.cumsum(windows_per_note) - windows_per_note  # each note's first window
    picked = window[np.repeat(starts - firsts, windows_per_note) + np.arange(int(windows_per_note.sum()))]
    picked[firsts[short]] = short_windows
    return _fmix64(picked), np.r_[firsts, len(picked)].astype(np.uint64)


@dataclasses.dataclass
class Sketches:
    """Sketched notes: where each is (source, row in its file, subject), its length in words,
    whether a downstream benchmark names it, and its MinHash digest. Picklable as plain
    arrays; `merge` appends."""

    sources: array = dataclasses.field(default_factory=lambda: array("b"))  # index into SOURCES
    rows: array = dataclasses.field(default_factory=lambda: array("q"))
    subjects: array = dataclasses.field(default_factory=lambda: array("q"))
    sizes: array = dataclasses.field(default_factory=lambda: array("q"))
    downstream: array = dataclasses.field(default_factory=lambda: array("b"))
    digests: list[np.ndarray] = dataclasses.field(default_factory=list)  # (notes, num_perm) uint32 blocks

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, source: str, notes: Iterable[tuple[int, int, str, bool]], options: NearOptions) -> None:
        """Sketches one source's notes, given as (row, subject, text, named by a downstream
        benchmark), all in one batch; a note with no words is skipped (nothing to match)."""
        batch = list(notes)
        if not batch:
            return
        rows, subjects, texts, named = zip(*batch)
        hashes, counts = word_hashes(list(texts))
        sketched = np.flatnonzero(counts).tolist()
        if not sketched:
            return
        self.sources.extend([SOURCES.index(source)] * len(sketched))
        self.rows.extend(rows[k] for k in sketched)
        self.subjects.extend(subjects[k] for k in sketched)
        self.sizes.extend(counts[sketched].tolist())
        self.downstream.extend(named[k] for k in sketched)
        shingles, offsets = shingle_hashes(hashes, counts[sketched], options.shingle_words)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(shingles, offsets, options.num_perm,
                                                                      options.seed)
        flat = np.fromiter(itertools.chain.from_iterable(matrix.to_rows()), dtype=np.uint32,
                           count=len(sketched) * options.num_perm)
        self.digests.append(flat.reshape(len(sketched), options.num_perm))

    def merge(self, other: Sketches) -> Sketches:
        for name in ("sources", "rows", "subjects", "sizes", "downstream"):
            getattr(self, name).extend(getattr(other, name))
        self.digests += other.digests
        return self

    def matrix(self, num_perm: int) -> np.ndarray:
        """Every digest, one row per note (the blocks joined once, then kept joined)."""
        if len(self.digests) != 1:
            self.digests = [np.concatenate(self.digests) if self.digests else np.zeros((0, num_perm), np.uint32)]
        return self.digests[0]

    def source_names(self) -> list[str]:
        return [SOURCES[i] for i in self.sources]


def _band_keys(band: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's values in one band (equal bands, equal keys)."""
    keys = np.zeros(len(band), dtype=np.uint64)
    for column in band.T:
        keys = keys * _MIX + column
    return _fmix64(keys)


def _same_key_pairs(keys: np.ndarray) -> np.ndarray:
    """Every pair (i, j), i < j, of rows with equal keys, encoded as i * len(keys) + j."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new_run = np.r_[True, ordered[1:] != ordered[:-1]]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(keys)), 0))
    earlier = np.arange(len(keys)) - run_start  # members of its run before each position
    total = int(earlier.sum())
    if not total:
        return np.zeros(0, np.int64)
    first = np.cumsum(earlier) - earlier
    i = np.repeat(order, earlier)
    j = order[np.repeat(run_start - first, earlier) + np.arange(total)]
    return np.minimum(i, j) * len(keys) + np.maximum(i, j)


def similar_pairs(sketches: Sketches, options: NearOptions) -> np.ndarray:
    """(i, j) index pairs, i < j, whose estimated Jaccard similarity reaches the threshold.

    LSH proposes candidates: pairs whose digests agree on all rows of at least one band. Each
    candidate is checked on the full digests (the fraction of equal values, rensa's estimate),
    so the result does not depend on which band caught it. Sorted, so the same input gives the
    same pairs.
    """
    digests = sketches.matrix(options.num_perm)
    n, rows = len(digests), options.num_perm // options.bands
    candidates = np.zeros(0, np.int64)
    for band in range(options.bands):
        band_pairs = _same_key_pairs(_band_keys(digests[:, band * rows:(band + 1) * rows]))
        candidates = np.union1d(candidates, band_pairs)
    kept = []
    for block in range(0, len(candidates), _PAIR_BLOCK):
        i, j = np.divmod(candidates[block:block + _PAIR_BLOCK], n)
        similarity = (digests[i] == digests[j]).sum(axis=1) / options.num_perm
        kept.append(np.stack([i, j], axis=1)[similarity >= options.threshold])
    return np.concatenate(kept) if kept else np.zeros((0, 2), np.int64)


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
