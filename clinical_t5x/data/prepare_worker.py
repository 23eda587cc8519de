"""What one `prepare` worker does with chunks of CSV records: parse, decide, DEID, write.

The reading process only cuts files into chunks (`clinical_t5x.data.mimic.RecordChunks`); every
worker parses its chunks with `csv`, decides each row's fate, replaces DEID placeholders,
encodes `tf.train.Example`s and writes the shards it owns, so all the per-note work runs in
parallel. A worker is either the reading process itself (`workers=1`) or one of the worker
processes; its counts come back as a `WorkerResult` that the reading process merges.

Row decisions, in this order (the first that applies is the drop reason):
`malformed`, `iserror`, `category`, `excluded_subject`, `empty` (no text), then the drops the
first pass decided (`clinical_t5x.data.first_pass`: the reading process collects every chunk's
keys and sketches and sends each chunk its drops): `downstream` (a patient whose notes a
downstream benchmark uses), `duplicate` (a re-saved MIMIC-III copy), `near_duplicate`; and
`empty` again when removing boilerplate lines (`--dedup-lines`) and DEID leave nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

from clinical_t5x.data import boilerplate, deid, shards
from clinical_t5x.data.first_pass import ChunkDrops, Scan, ScanPlan
from clinical_t5x.data.mimic import Chunk, Layout, Malformed, Note, parse_chunk

DROP_REASONS: tuple[str, ...] = ("iserror", "duplicate", "excluded_subject", "empty", "malformed", "category",
                                 "downstream", "near_duplicate")
MALFORMED_EXAMPLES = 20  # lines of malformed rows listed per input (all are counted)
_SPLIT_PERSON = b"ct5x-split"


def split_of(subject_id: int, validation_fraction: float) -> str:
    """`validation` for a fixed, hash-chosen `validation_fraction` of patients, else `train`.

    BLAKE2b of the decimal subject_id (personalised, so it is not correlated with other hash
    uses): deterministic across runs, machines and Python versions.
    """
    digest = hashlib.blake2b(str(subject_id).encode(), digest_size=8, person=_SPLIT_PERSON).digest()
    return "validation" if int.from_bytes(digest, "big") < validation_fraction * 2**64 else "train"


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs (picklable; sent once to each worker process)."""

    out_dir: Path
    sources: tuple[str, ...]
    num_shards: dict[str, int]  # split -> shards per source (at least one per worker)
    workers: int
    typed_mimic4: bool
    validation_fraction: float
    categories: frozenset[str] | None  # casefolded; None keeps every category
    exclude_categories: frozenset[str]
    excluded_subjects: frozenset[int]

    def owned_shards(self, worker: int) -> dict[str, list[int]]:
        return {split: [s for s in range(n) if s % self.workers == worker] for split, n in self.num_shards.items()}

    def path(self, split: str, source: str, shard: int) -> Path:
        return self.out_dir / split / shards.shard_name(source, shard, self.num_shards[split])


@dataclasses.dataclass
class WorkerResult:
    """What one worker did (plain, picklable counters; `merge` adds another's)."""

    deid: deid.DeidCounts = dataclasses.field(default_factory=deid.DeidCounts)
    notes: Counter = dataclasses.field(default_factory=Counter)  # (split, source) -> kept notes
    bytes: Counter = dataclasses.field(default_factory=Counter)  # (split, source) -> UTF-8 bytes
    dropped: Counter = dataclasses.field(default_factory=Counter)  # (source, reason) -> rows
    parsed: Counter = dataclasses.field(default_factory=Counter)  # (source, rows|blank_lines|...)
    categories: Counter = dataclasses.field(default_factory=Counter)  # (source, category) -> rows
    malformed: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)  # source, line, why
    subjects: dict[str, set[int]] = dataclasses.field(
        default_factory=lambda: {split: set() for split in shards.SPLITS})
    downstream_patients: set[tuple[str, int]] = dataclasses.field(default_factory=set)  # (source, subject)
    cpu_s: float | None = None  # CPU seconds of a worker process (None: the reading process)

    def merge(self, other: WorkerResult) -> WorkerResult:
        self.deid.merge(other.deid)
        for name in ("notes", "bytes", "dropped", "parsed", "categories"):
            getattr(self, name).update(getattr(other, name))
        self.malformed += other.malformed
        for split in shards.SPLITS:
            self.subjects[split] |= other.subjects[split]
        self.downstream_patients |= other.downstream_patients
        return self


class Worker:
    """Parses chunks, keeps or drops each row, writes kept notes to its own shards."""

    def __init__(self, config: WorkerConfig, index: int):
        self._config = config
        self._owned = config.owned_shards(index)
        self._next_shard: Counter = Counter()
        self._splits: dict[int, str] = {}  # subject -> split: memory bounded by patients
        self._encode = shards.ExampleEncoder()
        self._shards = {(split, source, shard): shards.ShardWriter(config.path(split, source, shard))
                        for split, owned in self._owned.items() for source in config.sources for shard in owned}
        self.result = WorkerResult()

    def _drop_reason(self, item: Note | Malformed) -> str | None:
        """The reason to drop a row before deduplication, or None."""
        if type(item) is Malformed:
            return "malformed"
        if item.iserror:
            return "iserror"
        config = self._config
        category = item.category.casefold()
        if (config.categories is not None and category not in config.categories) or (
                category in config.exclude_categories):
            return "category"
        if item.subject_id in config.excluded_subjects:
            return "excluded_subject"
        if not item.text or item.text.isspace():
            return "empty"
        return None

    def scan(self, source: str, layout: Layout, chunk: Chunk, plan: ScanPlan) -> Scan:
        """First pass: keys and sketches of the rows that would otherwise be kept, and the
        subjects (and sketches) of the notes a downstream benchmark names."""
        found, to_sketch = Scan(), []
        for item in parse_chunk(chunk, layout):
            if type(item) is not Note:
                continue
            named = bool(plan.downstream_rows) and int(item.note_id) in plan.downstream_rows
            if named:
                found.downstream_subjects.add(item.subject_id)
            kept = self._drop_reason(item) is None
            if kept and plan.keys and item.duplicate_key is not None:
                found.keys.add(item.duplicate_key, item.storetime, item.row)
            if named or (kept and plan.sketch_kept):
                to_sketch.append((item.row, item.subject_id, item.text, named))
            if kept and plan.lines:
                found.lines.add_note(item.text)
        found.sketches.add(source, to_sketch, plan.near)  # one batch per chunk
        return found

    def notes(self, source: str, layout: Layout, chunk: Chunk, drops: ChunkDrops) -> None:
        """Second (or only) pass: every row counted once, as kept or dropped with its reason."""
        result, parsed = self.result, Counter()
        for item in parse_chunk(chunk, layout, parsed):
            reason = self._drop_reason(item)
            if type(item) is Note:
                result.categories[source, item.category] += 1
                parsed["text_chars"] += len(item.text)
                if reason is None and item.subject_id in drops.subjects:
                    reason = "downstream"
                    result.downstream_patients.add((source, item.subject_id))
                if reason is None:
                    reason = drops.rows.get(item.row)
                if reason is None:
                    reason = self._write(source, item, drops.boilerplate)
            if reason is not None:
                result.dropped[source, reason] += 1
                if reason == "malformed" and result.dropped[source, reason] <= MALFORMED_EXAMPLES:
                    result.malformed.append((source, item.line, item.why))
        for name, count in parsed.items():
            result.parsed[source, name] += count

    def _write(self, source: str, note: Note, frequent_lines: frozenset[int]) -> str | None:
        """Writes a kept note without its boilerplate lines; returns "empty" when nothing is left."""
        result, text = self.result, note.text
        if frequent_lines:
            text, removed = boilerplate.remove(text, frequent_lines)
            result.parsed[source, "boilerplate_lines_removed"] += removed
        if "\x00" in text:
            text = text.replace("\x00", "")
            result.parsed[source, "notes_with_nul_removed"] += 1
        if source == "mimic3":
            clean = deid.replace_mimic3(text, result.deid)
        else:
            clean = deid.replace_mimic4(text, self._config.typed_mimic4, result.deid)
        if not clean or clean.isspace():
            return "empty"
        split = self._splits.get(note.subject_id)
        if split is None:
            split = self._splits[note.subject_id] = split_of(note.subject_id, self._config.validation_fraction)
        owned = self._owned[split]
        turn = self._next_shard[split, source]
        self._next_shard[split, source] = turn + 1
        data = clean.encode("utf-8")
        self._shards[split, source, owned[turn % len(owned)]].write(
            self._encode(data, note.note_id.encode(), note.subject_id, source.encode(), note.category.encode()))
        result.notes[split, source] += 1
        result.bytes[split, source] += len(data)
        result.subjects[split].add(note.subject_id)
        return None

    def close(self) -> WorkerResult:
        for writer in self._shards.values():
            writer.close()
        return self.result


def worker_process(config: WorkerConfig, index: int, inbox, results) -> None:
    """A worker process: runs the tasks from `inbox` until None, then sends its result.

    Tasks: ("scan", source, layout, chunk, plan) -> replies ("scan", index, Scan);
    ("notes", source, layout, chunk, drops). Failures are reported by exception type
    only (and an OSError's message: a path), never by anything that could hold note text.
    """
    try:
        worker = Worker(config, index)
        while (task := inbox.get()) is not None:
            if task[0] == "scan":
                results.put(("scan", index, worker.scan(*task[1:])))
            else:
                worker.notes(*task[1:])
        result = worker.close()
        result.cpu_s = time.process_time()  # this process's CPU since it was forked
        results.put(("done", index, result))
    except BaseException as e:  # noqa: BLE001 - reported to the reading process, which raises
        # No traceback: a third-party message or local could quote note text.
        results.put(("error", index, f"{type(e).__name__}: {e}" if isinstance(e, OSError) else type(e).__name__))
        sys.exit(1)
