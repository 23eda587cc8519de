"""`prepare`'s first pass: what it collects from every chunk, and the drops it decides.

Some drops depend on rows elsewhere in the inputs: a MIMIC-III note re-saved later
(`clinical_t5x.data.dedup`), a note with a near-duplicate elsewhere
(`clinical_t5x.data.near_dedup`), every note of a patient whose notes a downstream benchmark
uses (`--exclude-downstream`: CLIP and RadQA name MIMIC-III notes by ROW_ID, so their patients
are known only once NOTEEVENTS has been read, and the MIMIC-IV copies of those notes only once
they have been matched). So before any note is written, workers scan every chunk and send back
keys, sketches and the subjects of the named notes (`Scan`, never text); the reading process
merges them and `decide`s, and the second pass applies the `ChunkDrops` of each chunk.

Order: a downstream patient's notes are dropped first (reason `downstream`), then re-saves
(`duplicate`), then near-duplicates (`near_duplicate`) among the notes still kept, so a
cluster never keeps a note that is dropped anyway.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import NamedTuple

import numpy as np

from clinical_t5x.data import near_dedup
from clinical_t5x.data.boilerplate import LineCounts
from clinical_t5x.data.dedup import ResavedDuplicates
from clinical_t5x.data.mimic import MIMIC3, ROWS_PER_CHUNK
from clinical_t5x.data.near_dedup import NearOptions, Sketches

DEDUP_MODES = ("off", "exact", "near")


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """What the first pass collects from one source's chunks (picklable, sent with each chunk)."""

    keys: bool  # re-save keys (MIMIC-III, unless --dedup off)
    sketch_kept: bool  # sketches of every note that would be kept
    downstream_rows: frozenset[int]  # MIMIC-III ROW_IDs a downstream benchmark names
    near: NearOptions
    lines: bool = False  # count the lines of every note that would be kept (--dedup-lines)

    @property
    def needed(self) -> bool:
        return self.keys or self.sketch_kept or bool(self.downstream_rows) or self.lines


def plans(sources: tuple[str, ...], dedup: str, downstream_rows: frozenset[int],
          near: NearOptions, lines: bool = False) -> dict[str, ScanPlan]:
    """The plan per source: MIMIC-IV notes are sketched to find copies of downstream notes."""
    if dedup not in DEDUP_MODES:
        raise ValueError(f"dedup must be one of {', '.join(DEDUP_MODES)}, got {dedup!r}")
    result = {}
    for source in sources:
        is_mimic3 = source == MIMIC3.source
        result[source] = ScanPlan(
            keys=is_mimic3 and dedup != "off",
            sketch_kept=dedup == "near" or (not is_mimic3 and bool(downstream_rows)),
            downstream_rows=downstream_rows if is_mimic3 else frozenset(), near=near, lines=lines)
    return result


@dataclasses.dataclass
class Scan:
    """What the first pass found in some chunks of one source (`merge` adds another's)."""

    keys: ResavedDuplicates = dataclasses.field(default_factory=ResavedDuplicates)
    sketches: Sketches = dataclasses.field(default_factory=Sketches)
    downstream_subjects: set[int] = dataclasses.field(default_factory=set)
    lines: LineCounts = dataclasses.field(default_factory=LineCounts)

    def merge(self, other: Scan) -> Scan:
        self.keys.merge(other.keys)
        self.lines.merge(other.lines)
        self.sketches.merge(other.sketches)
        self.downstream_subjects |= other.downstream_subjects
        return self


class ChunkDrops(NamedTuple):
    """The second pass's drops for one chunk: rows by reason, and patients to drop whole."""

    rows: dict[int, str]  # row -> "duplicate" | "near_duplicate"
    subjects: frozenset[int]  # every note of these patients -> "downstream"
    boilerplate: frozenset[int] = frozenset()  # line hashes removed from kept notes


_NO_DROPS = ChunkDrops({}, frozenset())


@dataclasses.dataclass
class Decisions:
    """Drops for the second pass, and what the manifest reports about them."""

    rows: dict[str, dict[int, dict[int, str]]]  # source -> chunk index -> row -> reason
    subjects: dict[str, frozenset[int]]  # source -> downstream patients
    report: dict
    boilerplate: frozenset[int] = frozenset()

    def for_chunk(self, source: str, index: int) -> ChunkDrops:
        rows = self.rows.get(source, {}).get(index, {})
        subjects = self.subjects.get(source, frozenset())
        if rows or subjects or self.boilerplate:
            return ChunkDrops(rows, subjects, self.boilerplate)
        return _NO_DROPS


def _by_chunk(drops: dict[str, dict[int, str]]) -> dict[str, dict[int, dict[int, str]]]:
    result: dict[str, dict[int, dict[int, str]]] = {}
    for source, rows in drops.items():
        chunks: dict[int, dict[int, str]] = defaultdict(dict)
        for row, reason in rows.items():
            chunks[row // ROWS_PER_CHUNK][row] = reason
        result[source] = dict(chunks)
    return result


def decide(scans: dict[str, Scan], dedup: str, near: NearOptions,
           downstream_subjects: frozenset[int] = frozenset(), dedup_lines: float | None = None) -> Decisions:
    """Every cross-row drop, from the merged scans of all sources.

    `downstream_subjects` are patients named outright (`subject_ids.csv`), dropped in every
    source; the patients of the named MIMIC-III notes are dropped from MIMIC-III, and the
    MIMIC-IV patients with a near-copy of one of those notes from their MIMIC-IV source.
    With `dedup_lines`, lines in more than that fraction of all sources' notes are boilerplate.
    """
    drops: dict[str, dict[int, str]] = {source: {} for source in scans}
    for source, scan in scans.items():
        drops[source].update(dict.fromkeys(scan.keys.losers(), "duplicate"))
    sketches = Sketches()
    for scan in scans.values():
        sketches.merge(scan.sketches)
    pairs = near_dedup.similar_pairs(sketches, near) if len(sketches) else np.zeros((0, 2), np.int64)
    names = sketches.source_names()
    subjects = {source: set(downstream_subjects) for source in scans}
    subjects.get(MIMIC3.source, set()).update(*(scan.downstream_subjects for scan in scans.values()))
    named = np.frombuffer(sketches.downstream, dtype=np.int8).astype(bool)
    for i, j in pairs[named[pairs[:, 0]] != named[pairs[:, 1]]]:
        copy = j if named[i] else i
        if names[copy] != MIMIC3.source:
            subjects[names[copy]].add(sketches.subjects[copy])
    report: dict = {}
    if dedup == "near":
        live = np.array([not named[k] and sketches.rows[k] not in drops[names[k]]
                         and sketches.subjects[k] not in subjects[names[k]] for k in range(len(sketches))],
                        dtype=bool)
        clusters = near_dedup.resolve(sketches, pairs, live)
        for k in clusters.losers.tolist():
            drops[names[k]][sketches.rows[k]] = "near_duplicate"
        report["near_duplicate_clusters"] = {str(size): n for size, n in sorted(clusters.histogram.items())}
        report["sketched_notes"] = len(sketches)
    boilerplate = frozenset()
    if dedup_lines is not None:
        lines = LineCounts()
        for scan in scans.values():
            lines.merge(scan.lines)
        boilerplate = lines.frequent(dedup_lines)
        report["boilerplate_lines"] = {"fraction": dedup_lines, "notes_counted": lines.notes,
                                       "frequent_lines": len(boilerplate)}
    return Decisions(rows=_by_chunk(drops), subjects={s: frozenset(v) for s, v in subjects.items()},
                     report=report, boilerplate=boilerplate)
