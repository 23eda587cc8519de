"""`clinical-t5x prepare`: raw MIMIC note CSVs -> DEID-normalised TFRecord shards + manifest.

The reading process only decompresses each input and cuts it into ~1 MB chunks of whole CSV
records (`clinical_t5x.data.mimic.RecordChunks`); the workers (this process with `workers=1`,
else one process each) parse the chunks, drop or keep every row, replace DEID placeholders
and write their own shards (`clinical_t5x.data.prepare_worker`), so the per-note work scales with
`workers`. Chunks go to the workers round-robin, and every worker writes the shards
`shard % workers == worker` round-robin in input order: the output is deterministic for a
given number of workers, and holds the same notes for any number (a split gets at least one
shard per worker).

Kept notes go to `validation` when a keyed hash of their subject_id falls under
`validation_fraction`, so a patient is never in both splits. Category filters match
case-insensitively on the stripped category; MIMIC-IV's category is its note_type (DS, AD,
RR, AR). NUL characters are removed from kept text (counted). Drops that depend on other rows
(re-saved MIMIC-III copies, near-duplicates, downstream benchmark patients) are decided after a
first, text-free pass over every input (`clinical_t5x.data.first_pass`).

`OUT/manifest.json` accounts for every row (rows_read = kept + dropped, checked before it is
written) and is written last, atomically: a run that dies leaves no manifest, and readers
refuse such a directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm import tqdm

from clinical_t5x import owner_only

from clinical_t5x.data import canaries as canary_notes, exclusion, first_pass, shards
from clinical_t5x.data.exclusion import load_subject_ids
from clinical_t5x.data.first_pass import ChunkDrops, Decisions, Scan, ScanPlan
from clinical_t5x.data.near_dedup import NearOptions
from clinical_t5x.data.shards import FORMAT, MANIFEST, read_manifest
from clinical_t5x.data.mimic import (CHUNK_BYTES, MIMIC3, Chunk, Layout, RecordChunks, Schema, check_header,
                                find_mimic4_files, reportable_category)
from clinical_t5x.data.prepare_worker import (DROP_REASONS, MALFORMED_EXAMPLES, Worker, WorkerConfig, WorkerResult,
                                         split_of, worker_process)

__all__ = ["DROP_REASONS", "FORMAT", "load_subject_ids", "main", "read_manifest", "run", "split_of"]

_QUEUE_CHUNKS = 4  # per worker process: bounds memory when workers fall behind
_UNKNOWN_LABELS = 1000  # most frequent unknown placeholder labels listed (all are counted)


# ----------------------------------------------------------------------------------------
# Where the chunks go: this process (workers=1) or worker processes.


class _InlineWorkers:
    """`workers=1`: the reading process does the work (no process start, no copying)."""

    def __init__(self, config: WorkerConfig):
        self._worker = Worker(config, 0)
        self._scan = Scan()

    def submit_scan(self, source: str, layout: Layout, chunk: Chunk, plan: ScanPlan) -> None:
        self._scan.merge(self._worker.scan(source, layout, chunk, plan))

    def collect_scan(self) -> Scan:
        found, self._scan = self._scan, Scan()
        return found

    def submit_notes(self, source: str, layout: Layout, chunk: Chunk, drops: ChunkDrops) -> None:
        self._worker.notes(source, layout, chunk, drops)

    def finish(self) -> list[WorkerResult]:
        return [self._worker.close()]

    def abort(self) -> None:
        self._worker.close()


class _WorkerProcesses:
    """`workers>1`: chunks go round-robin to the worker processes through bounded queues.

    The processes come from a fork server that imports TensorFlow once (instead of once per
    worker, ~4 CPU seconds each); the server starts at once and the workers when the first
    chunk is ready. Forking after a bare `import tensorflow` is safe for what workers use
    (protobuf and the TFRecord writer, no TF runtime); a process running TF is never forked.
    """

    def __init__(self, config: WorkerConfig):
        self._config = config
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["tensorflow", "clinical_t5x.data.prepare_worker"])
        multiprocessing.forkserver.ensure_running()  # returns at once; the server imports TF
        self._results = self._ctx.Queue()
        self._inboxes = [self._ctx.Queue(maxsize=_QUEUE_CHUNKS) for _ in range(config.workers)]
        self._procs: list[Any] = []
        self._pending_scans = self._turn = 0

    def _start(self) -> None:
        self._procs = [self._ctx.Process(target=worker_process, args=(self._config, w, inbox, self._results),
                                         name=f"clinical-t5x-prepare-{w}", daemon=True)
                       for w, inbox in enumerate(self._inboxes)]
        for proc in self._procs:
            proc.start()

    def _send(self, worker: int, task: tuple | None) -> None:
        if not self._procs:
            self._start()
        while True:
            try:
                self._inboxes[worker].put(task, timeout=1)
                return
            except queue.Full:
                self._check_alive()

    def _check_alive(self) -> None:
        for worker, proc in enumerate(self._procs):
            if proc.exitcode is not None and proc.exitcode != 0:
                self._raise_reported(timeout=1)
                raise RuntimeError(f"prepare worker {worker} exited with code {proc.exitcode}")

    def _raise_reported(self, timeout: float) -> None:
        try:
            kind, worker, payload = self._results.get(timeout=timeout)
        except queue.Empty:
            return
        if kind == "error":
            raise RuntimeError(f"prepare worker {worker} failed: {payload}")

    def _receive(self, expected: str) -> tuple[int, Any]:
        """The next (worker, payload) reply of kind `expected`; raises on a failed worker."""
        while True:
            try:
                kind, worker, payload = self._results.get(timeout=2)
            except queue.Empty:
                self._check_alive()
                continue
            if kind == "error":
                raise RuntimeError(f"prepare worker {worker} failed: {payload}")
            if kind != expected:
                raise RuntimeError(f"prepare worker {worker}: unexpected reply {kind!r}")
            return worker, payload

    def _next_worker(self) -> int:
        """Round-robin over all chunks of all files: deterministic, and small files spread too."""
        self._turn += 1
        return (self._turn - 1) % len(self._inboxes)

    def submit_scan(self, source: str, layout: Layout, chunk: Chunk, plan: ScanPlan) -> None:
        self._send(self._next_worker(), ("scan", source, layout, chunk, plan))
        self._pending_scans += 1

    def collect_scan(self) -> Scan:
        found = Scan()
        while self._pending_scans:
            found.merge(self._receive("scan")[1])
            self._pending_scans -= 1
        return found

    def submit_notes(self, source: str, layout: Layout, chunk: Chunk, drops: ChunkDrops) -> None:
        self._send(self._next_worker(), ("notes", source, layout, chunk, drops))

    def finish(self) -> list[WorkerResult]:
        for worker in range(len(self._inboxes)):
            self._send(worker, None)
        results = dict(self._receive("done") for _ in self._procs)
        for proc in self._procs:
            proc.join()
        return [results[worker] for worker in sorted(results)]

    def abort(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join()


# ----------------------------------------------------------------------------------------
# Reading: cut each input into chunks and hand them out.


def _progress(chunks: RecordChunks, what: str, enabled: bool) -> tqdm:
    return tqdm(total=chunks.size, desc=f"{what} {chunks.path.name}", unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, disable=not enabled, mininterval=0.5)


def _scan_input(chunks: RecordChunks, workers, plan: ScanPlan, progress: bool) -> Scan:
    """First pass over one input: keys, sketches and downstream subjects, never text."""
    with _progress(chunks, "scan", progress) as bar:
        for chunk in chunks:
            workers.submit_scan(chunks.schema.source, chunks.layout, chunk, plan)
            bar.update(chunks.bytes_read - bar.n)
        found = workers.collect_scan()
        bar.update(chunks.bytes_read - bar.n)
    return found


def _read_input(chunks: RecordChunks, workers, decisions: Decisions, progress: bool) -> None:
    source = chunks.schema.source
    with _progress(chunks, "prepare", progress) as bar:
        for chunk in chunks:
            workers.submit_notes(source, chunks.layout, chunk, decisions.for_chunk(source, chunk.index))
            bar.update(chunks.bytes_read - bar.n)
        bar.update(chunks.bytes_read - bar.n)


def _decide(inputs: dict[str, RecordChunks], workers, plans: dict[str, ScanPlan], dedup: str,
            near: NearOptions, excluded: exclusion.Excluded | None, dedup_lines: float | None,
            progress: bool) -> Decisions:
    scans = {source: _scan_input(chunks, workers, plans[source], progress) if plans[source].needed else Scan()
             for source, chunks in inputs.items()}
    return first_pass.decide(scans, dedup, near, excluded.subjects if excluded else frozenset(), dedup_lines)


# ----------------------------------------------------------------------------------------
# The run: inputs, output directory, manifest.


def _inputs(mimic3: str | Path | None, mimic4_dir: str | Path | None) -> dict[Schema, Path]:
    found: dict[Schema, Path] = {}
    if mimic3 is not None:
        if not Path(mimic3).is_file():
            raise FileNotFoundError(f"{mimic3}: MIMIC-III NOTEEVENTS file not found")
        found[MIMIC3] = Path(mimic3)
    if mimic4_dir is not None:
        found.update(find_mimic4_files(mimic4_dir))
    if not found:
        raise ValueError("nothing to prepare: give mimic3 (NOTEEVENTS.csv[.gz]) and/or mimic4_dir")
    for schema, path in found.items():
        check_header(path, schema)
    return found


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Creates OUT owner-only; an earlier output is replaced only with `overwrite`, and a
    deletion that fails stops the run (its old shards must not sit beside the new ones)."""
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; use --overwrite to replace a previous output")
        try:
            (out / MANIFEST).unlink(missing_ok=True)  # first: a half-replaced OUT must look unfinished
            (out / canary_notes.FILE).unlink(missing_ok=True)
            for split in shards.SPLITS:
                if (out / split).exists():
                    shutil.rmtree(out / split)
        except OSError as e:
            raise OSError(f"--overwrite could not delete the previous output in {out} "
                          f"({e.strerror}: {e.filename}); remove it by hand") from None
    owner_only.make_dir(out)
    for split in shards.SPLITS:
        owner_only.make_dir(out / split)


def _casefold_set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(v.strip().casefold() for v in values if v.strip())


def _input_entry(source: str, chunks: RecordChunks, merged: WorkerResult) -> dict:
    parsed = {name: count for (src, name), count in merged.parsed.items() if src == source}
    kept = sum(merged.notes[split, source] for split in shards.SPLITS)
    dropped = {reason: merged.dropped[source, reason] for reason in DROP_REASONS}
    rows = parsed.get("rows", 0)
    if rows != kept + sum(dropped.values()):
        raise RuntimeError(f"internal error: {chunks.path}: {rows} rows read but "
                           f"{kept} kept + {sum(dropped.values())} dropped")
    malformed = sorted((line, why) for src, line, why in merged.malformed if src == source)
    categories: Counter = Counter()  # known category strings verbatim, others only counted
    for (src, category), count in merged.categories.items():
        if src == source:
            categories[reportable_category(category)] += count
    return {
        "path": str(chunks.path), "file_bytes": chunks.size, "rows_read": rows, "kept": kept,
        "dropped": dropped, "text_chars_read": parsed.get("text_chars", 0), "error": chunks.error,
        "invalid_utf8_bytes": parsed.get("invalid_utf8_bytes", 0),
        "blank_lines": parsed.get("blank_lines", 0),
        "notes_with_nul_removed": parsed.get("notes_with_nul_removed", 0),
        "boilerplate_lines_removed": parsed.get("boilerplate_lines_removed", 0),
        "categories": dict(sorted(categories.items())),
        "malformed_rows": [{"line": line, "why": why} for line, why in malformed[:MALFORMED_EXAMPLES]],
    }


def _manifest(config: WorkerConfig, inputs: dict[str, RecordChunks], results: list[WorkerResult],
              options: dict[str, Any], elapsed: float) -> dict:
    merged = WorkerResult()
    for result in results:
        merged.merge(result)
    if merged.subjects["train"] & merged.subjects["validation"]:
        raise RuntimeError("internal error: a subject is in both splits")
    entries = {source: _input_entry(source, chunks, merged) for source, chunks in inputs.items()}
    seen = {category.casefold() for _, category in merged.categories}
    filters = set(config.categories or ()) | config.exclude_categories
    deid_counts = merged.deid.as_dict()
    manifest = {
        "format": FORMAT,
        "rows_read": sum(e["rows_read"] for e in entries.values()),
        "kept": {split: {source: {"notes": merged.notes[split, source], "bytes": merged.bytes[split, source]}
                         for source in config.sources} for split in shards.SPLITS},
        "dropped": {reason: sum(e["dropped"][reason] for e in entries.values()) for reason in DROP_REASONS},
        "tags": deid_counts["tags"],
        "unknown_labels": dict(list(deid_counts["unknown_labels"].items())[:_UNKNOWN_LABELS]),
        "unknown_labels_total": {"distinct": len(merged.deid.unknown_labels),
                                 "occurrences": sum(merged.deid.unknown_labels.values())},
        "deid": {k: v for k, v in deid_counts.items() if k not in ("tags", "unknown_labels")},
        "subjects": {split: len(merged.subjects[split]) for split in shards.SPLITS},
        "shards": {split: {source: [shards.shard_name(source, i, n) for i in range(n)]
                           for source in config.sources} for split, n in config.num_shards.items()},
        "inputs": entries,
        "errors": [e["error"] for e in entries.values() if e["error"]],
        "unmatched_category_filters": sorted(filters - seen),
        "options": options,
        "timing": {"elapsed_s": round(elapsed, 3),
                   "worker_cpu_s": [None if r.cpu_s is None else round(r.cpu_s, 3) for r in results]},
    }
    kept_total = sum(v["notes"] for split in manifest["kept"].values() for v in split.values())
    if manifest["rows_read"] != kept_total + sum(manifest["dropped"].values()):
        raise RuntimeError("internal error: rows read != kept + dropped")
    return manifest


def _cross_row_report(manifest: dict, results: list[WorkerResult], decisions: Decisions,
                      downstream: exclusion.Excluded | None) -> dict:
    """The manifest's `near_duplicates` and `downstream` sections (counts and ids, no text)."""
    report = {}
    if "near_duplicate_clusters" in decisions.report:
        report["near_duplicates"] = {
            "dropped": {source: e["dropped"]["near_duplicate"] for source, e in manifest["inputs"].items()},
            "cluster_sizes": decisions.report["near_duplicate_clusters"],
            "sketched_notes": decisions.report["sketched_notes"]}
    if "boilerplate_lines" in decisions.report:
        report["boilerplate_lines"] = {**decisions.report["boilerplate_lines"], "removed": {
            source: e["boilerplate_lines_removed"] for source, e in manifest["inputs"].items()}}
    if downstream is not None:
        patients = set().union(*(r.downstream_patients for r in results))
        report["downstream"] = {
            "named": downstream.files,
            "patients": {source: sum(1 for s, _ in patients if s == source) for source in manifest["inputs"]},
            "notes": {source: e["dropped"]["downstream"] for source, e in manifest["inputs"].items()}}
    return report


def _write_json_private(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with owner_only.open_file(tmp, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def run(mimic3: str | Path | None = None, mimic4_dir: str | Path | None = None, *,
        out: str | Path, categories: Iterable[str] | None = None,
        exclude_categories: Iterable[str] | None = None,
        exclude_subjects: str | Path | Iterable[int] | None = None,
        validation_fraction: float = 0.01, num_shards: int = 8, validation_shards: int = 1,
        workers: int = 1, typed_mimic4: bool = False, overwrite: bool = False,
        progress: bool = True, chunk_bytes: int = CHUNK_BYTES, dedup: str = "exact",
        near: NearOptions = NearOptions(), exclude_downstream: str | Path | None = None,
        dedup_lines: float | None = None, canaries: int = 0,
        canary_repeats: Sequence[int] = canary_notes.DEFAULT_REPEATS, canary_seed: int = 0) -> dict:
    """Prepares MIMIC-III and/or MIMIC-IV notes into `out`; returns the manifest it wrote.

    `exclude_subjects` is a file of ids (one per line) or the ids themselves. `dedup`:
    "exact" drops re-saved MIMIC-III copies, "near" near-duplicates too (`near` sets how),
    "off" neither. `exclude_downstream` is a folder of downstream benchmark files whose
    patients leave pretraining (`clinical_t5x.data.exclusion`). `dedup_lines` removes lines found
    in more than that fraction of notes (`clinical_t5x.data.boilerplate`). Raises before
    writing anything on a missing file, a missing column or a non-empty `out` (without
    `overwrite`); bad rows are dropped and counted, never raised. `chunk_bytes` is the unit
    of work handed to a worker (tests make it small to exercise many chunks). `canaries` > 0
    plants that many secrets in training notes (`clinical_t5x.data.canaries`).
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    if dedup_lines is not None and not 0.0 < dedup_lines < 1.0:
        raise ValueError(f"dedup_lines must be in (0, 1), got {dedup_lines}")
    if num_shards < 1 or validation_shards < 1 or workers < 1:
        raise ValueError("num_shards, validation_shards and workers must be >= 1")
    if canaries < 0:
        raise ValueError(f"canaries must be >= 0, got {canaries}")
    started = time.monotonic()
    found = _inputs(mimic3, mimic4_dir)
    downstream = None if exclude_downstream is None else exclusion.load(exclude_downstream)
    plans = first_pass.plans(tuple(s.source for s in found), dedup,
                             downstream.row_ids if downstream else frozenset(), near, dedup_lines is not None)
    if exclude_subjects is None:
        excluded = frozenset()
    elif isinstance(exclude_subjects, (str, Path)):
        excluded = load_subject_ids(exclude_subjects)
    else:
        excluded = frozenset(int(s) for s in exclude_subjects)
    out = Path(out)
    _prepare_out_dir(out, overwrite)
    config = WorkerConfig(
        out_dir=out, sources=tuple(s.source for s in found),
        num_shards={"train": max(num_shards, workers), "validation": max(validation_shards, workers)},
        workers=workers, typed_mimic4=typed_mimic4, validation_fraction=validation_fraction,
        categories=_casefold_set(categories), exclude_categories=_casefold_set(exclude_categories) or frozenset(),
        excluded_subjects=excluded)
    inputs = {schema.source: RecordChunks(path, schema, chunk_bytes) for schema, path in found.items()}
    pool = _InlineWorkers(config) if workers == 1 else _WorkerProcesses(config)
    try:
        decisions = _decide(inputs, pool, plans, dedup, near, downstream, dedup_lines, progress)
        for chunks in inputs.values():
            _read_input(chunks, pool, decisions, progress)
        results = pool.finish()
    except BaseException:
        pool.abort()
        raise
    options = {
        "categories": sorted(config.categories) if config.categories is not None else None,
        "exclude_categories": sorted(config.exclude_categories), "excluded_subjects": len(excluded),
        "exclude_subjects_file": str(exclude_subjects) if isinstance(exclude_subjects, (str, Path)) else None,
        "validation_fraction": validation_fraction, "num_shards": num_shards,
        "validation_shards": validation_shards, "workers": workers, "typed_mimic4": typed_mimic4,
        "dedup": dedup, "near": dataclasses.asdict(near) if dedup == "near" else None,
        "exclude_downstream": str(exclude_downstream) if exclude_downstream is not None else None,
        "dedup_lines": dedup_lines,
    }
    manifest = _manifest(config, inputs, results, options, time.monotonic() - started)
    manifest.update(_cross_row_report(manifest, results, decisions, downstream))
    if canaries:
        canary_notes.plant(out, manifest, canaries, canary_repeats, canary_seed)
    manifest["unlisted_files"] = shards.unlisted_files(out, manifest)
    _write_json_private(out / MANIFEST, manifest)
    return manifest


def _summary(manifest: dict, out_dir: Path) -> str:
    kept = {split: sum(v["notes"] for v in sources.values()) for split, sources in manifest["kept"].items()}
    dropped = ", ".join(f"{k} {v}" for k, v in manifest["dropped"].items() if v) or "none"
    lines = [f"read {manifest['rows_read']} rows; kept train {kept['train']}, validation "
             f"{kept['validation']}; dropped: {dropped}"]
    lines += [f"warning: {error}" for error in manifest["errors"]]
    lines += [f"warning: category filter {c!r} matched no row" for c in manifest["unmatched_category_filters"]]
    lines += [f"warning: {out_dir / name} is not in the manifest and will never be read"
              for name in manifest["unlisted_files"]]
    return "\n".join(lines)


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clinical-t5x prepare", description=__doc__.split("\n")[0],
        epilog="Prints counts only, never note text. OUT is created owner-only.")
    parser.add_argument("--mimic3", type=Path, help="MIMIC-III NOTEEVENTS.csv or .csv.gz")
    parser.add_argument("--mimic4-dir", type=Path,
                        help="MIMIC-IV-Note directory holding discharge.csv(.gz) and/or radiology.csv(.gz)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--categories", type=_names, action="extend",
                        help="keep only these categories (comma-separated; repeatable)")
    parser.add_argument("--exclude-categories", type=_names, action="extend", default=None,
                        help="drop these categories (comma-separated; repeatable)")
    parser.add_argument("--exclude-subjects", type=Path, help="file of subject ids to drop, one per line")
    parser.add_argument("--validation-fraction", type=float, default=0.01,
                        help="fraction of patients in the validation split (default 0.01)")
    parser.add_argument("--num-shards", type=int, default=8,
                        help="train shards per source (default 8; at least one per worker)")
    parser.add_argument("--validation-shards", type=int, default=1,
                        help="validation shards per source (default 1; at least one per worker)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that parse, DEID and write (default 1: this process)")
    parser.add_argument("--typed-mimic4", action="store_true",
                        help="type MIMIC-IV ___ blanks from their left context instead of [MISC]")
    defaults = NearOptions()
    parser.add_argument("--dedup", choices=first_pass.DEDUP_MODES, default="exact",
                        help="exact: drop re-saved MIMIC-III copies (default); near: also near-duplicate "
                             "notes within and across MIMIC-III/IV (MinHash + LSH); off: neither")
    parser.add_argument("--near-shingle-words", type=int, default=defaults.shingle_words,
                        help=f"words per shingle for --dedup near (default {defaults.shingle_words})")
    parser.add_argument("--near-permutations", type=int, default=defaults.num_perm,
                        help=f"MinHash permutations (default {defaults.num_perm})")
    parser.add_argument("--near-bands", type=int, default=defaults.bands,
                        help=f"LSH bands, dividing the permutations (default {defaults.bands})")
    parser.add_argument("--near-threshold", type=float, default=defaults.threshold,
                        help=f"estimated Jaccard similarity that makes a near-duplicate (default {defaults.threshold})")
    parser.add_argument("--dedup-lines", type=float, metavar="FRACTION",
                        help="remove lines (compared after DEID normalisation) found in more than this "
                             "fraction of notes, e.g. 0.01 (default: off)")
    parser.add_argument("--exclude-downstream", type=Path, metavar="DIR",
                        help="drop every patient of the CLIP/RadQA notes or subject_ids.csv in DIR, and the "
                             "MIMIC-IV patients holding copies of those notes")
    parser.add_argument("--canaries", type=int, default=0,
                        help="plant N synthetic secrets in training notes, listed in OUT/canaries.json "
                             "(for `clinical-t5x audit`; default 0: none)")
    parser.add_argument("--canary-repeats", type=canary_notes.parse_repeats, default=canary_notes.DEFAULT_REPEATS,
                        help="distinct notes per canary, cycled over the canaries (default 1,4,16,64)")
    parser.add_argument("--canary-seed", type=int, default=0, help="seed of the secrets and their notes")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous output in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.mimic3 is None and args.mimic4_dir is None:
        parser.error("give --mimic3 and/or --mimic4-dir")
    try:
        near = NearOptions(shingle_words=args.near_shingle_words, num_perm=args.near_permutations,
                           bands=args.near_bands, threshold=args.near_threshold)
        manifest = run(args.mimic3, args.mimic4_dir, out=args.out, categories=args.categories,
                       exclude_categories=args.exclude_categories, exclude_subjects=args.exclude_subjects,
                       validation_fraction=args.validation_fraction, num_shards=args.num_shards,
                       validation_shards=args.validation_shards, workers=args.workers,
                       typed_mimic4=args.typed_mimic4, overwrite=args.overwrite,
                       progress=not args.no_progress, dedup=args.dedup, near=near,
                       exclude_downstream=args.exclude_downstream, dedup_lines=args.dedup_lines,
                       canaries=args.canaries, canary_repeats=args.canary_repeats,
                       canary_seed=args.canary_seed)
    except (OSError, ValueError) as e:  # bad inputs or OUT: messages name files, never text
        print(f"clinical-t5x prepare: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a failed worker: reported by exception type only
        print(f"clinical-t5x prepare: failed: {e}", file=sys.stderr)
        return 1
    print(_summary(manifest, args.out), file=sys.stderr)
    print(f"wrote {args.out / MANIFEST}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
