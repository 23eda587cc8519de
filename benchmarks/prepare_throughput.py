"""Prepare throughput: MB/s of note text per worker process, end to end, and its scaling.

End to end means everything `clinical-t5x prepare` does: read the .csv.gz files, the
first pass (MIMIC-III duplicate keys; with --dedup near, sketches of every note and the
clustering), CSV parsing, DEID replacement, Example encoding and shard writing, and starting
the worker processes. TensorFlow's import (a fixed start-up cost, printed apart) is outside the
timed runs: this process imports it first, and for --workers > 1 an untimed warm-up run starts
the fork server, which imports it once and then serves every run of this process (otherwise
whichever run came first would pay it alone). The corpus is the package's own synthetic MIMIC look-alike
(`clinical_t5x.data.synth.write_synthetic`), generated once into a cache directory and reused.
MB = 10**6 bytes of UTF-8 note text in the input files.

Besides wall-clock rates it prints CPU seconds (the reading process; each worker process),
because on a shared machine wall time measures the neighbours as much as this code:
MB per worker CPU-second is what one worker does with a core to itself.

With `--dedup exact near` (the default) every worker count runs both modes back to back,
`--repeats` times, alternating, so both see the same neighbours; the near/exact ratio of the
summed wall and CPU times is what `--dedup near` costs.

    python benchmarks/prepare_throughput.py                 # >= 200 MB corpus, workers 1 and 2
    python benchmarks/prepare_throughput.py --workers 1 2 4 --notes 20000 --min-mb 0 --profile

Targets: >= 10 MB/s per worker process, close to linear in --workers; `--dedup near` at least
half the rate of `--dedup exact`.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import gzip
import json
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clinical_t5x.data import prepare, synth

MB = 1e6
_CORPUS_VERSION = 2  # bump when synth's output changes (v2: planted near-duplicates)
_TEXT_COLUMN = {"mimic3": "TEXT", "mimic4_discharge": "text", "mimic4_radiology": "text"}


def _text_bytes(paths: dict[str, Path]) -> int:
    """Exact UTF-8 bytes of note text in the corpus (computed once, cached with it)."""
    csv.field_size_limit(2**31 - 1)
    total = 0
    for source, path in paths.items():
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            total += sum(len(row[_TEXT_COLUMN[source]].encode("utf-8")) for row in csv.DictReader(f))
    return total


def corpus(cache: Path, notes: int, seed: int) -> tuple[Path, int]:
    """The cached synthetic corpus directory and its note-text bytes (generated when missing)."""
    folder = cache / f"prepare_bench_v{_CORPUS_VERSION}_n{notes}_s{seed}"
    info = folder / "corpus.json"
    if not info.is_file():
        print(f"generating {notes} synthetic MIMIC-III notes (+ MIMIC-IV) in {folder} ...", file=sys.stderr)
        paths = synth.write_synthetic(folder, notes=notes, seed=seed, progress=True)
        info.write_text(json.dumps({"text_bytes": _text_bytes(paths)}))
    return folder, json.loads(info.read_text())["text_bytes"]


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo; else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def tensorflow_import_cpu() -> float:
    """CPU seconds of `import tensorflow` in a fresh process (a fixed start-up cost)."""
    before = _cpu_seconds(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, capture_output=True)
    return _cpu_seconds(resource.RUSAGE_CHILDREN) - before


def warm_fork_server(scratch: Path, workers: int) -> None:
    """An untimed prepare of a tiny corpus with `workers` processes: starts the fork server
    (one per Python process, kept between runs) and its TensorFlow import before timing."""
    raw = synth.write_synthetic(scratch / "warm_raw", notes=20, seed=0)
    prepare.run(raw["mimic3"], out=scratch / "warm_out", workers=workers, overwrite=True, progress=False)


def run_once(folder: Path, out: Path, workers: int, num_shards: int, profile: bool, dedup: str) -> dict:
    """One prepare run: wall seconds, reading-process CPU seconds, worker CPU seconds, manifest.

    Worker processes are forked by the fork server, not by us: their CPU comes from the manifest.
    """
    profiler = cProfile.Profile() if profile else None
    cpu, start = _cpu_seconds(), time.perf_counter()
    if profiler:
        profiler.enable()
    manifest = prepare.run(folder / "NOTEEVENTS.csv.gz", folder / "note", out=out, workers=workers,
                           num_shards=num_shards, overwrite=True, progress=False, dedup=dedup)
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    if profiler:
        print(f"\nprofile of the reading process, workers={workers}:", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    worker_cpu = [c for c in manifest["timing"]["worker_cpu_s"] if c is not None]
    return {"elapsed": elapsed, "reader_cpu": cpu, "worker_cpu": worker_cpu, "manifest": manifest}


def _print_run(workers: int, mode: str, r: dict, mb: float, first: tuple[int, float] | None) -> None:
    rate = mb / r["elapsed"]
    first = first or (workers, rate)
    kept = sum(v["notes"] for split in r["manifest"]["kept"].values() for v in split.values())
    print(f"workers={workers} dedup={mode}: {r['elapsed']:6.1f} s wall, {rate:6.1f} MB/s, {rate / workers:5.1f} MB/s "
          f"per worker; speed-up x{rate / first[1]:.2f} over workers={first[0]} with --dedup {mode} "
          f"(linear: x{workers / first[0]:.2f}); {kept} notes kept", flush=True)
    if r["worker_cpu"]:
        busiest = max(r["worker_cpu"])
        print(f"    CPU s: reading process {r['reader_cpu']:.1f}, workers "
              f"{', '.join(f'{c:.1f}' for c in r['worker_cpu'])}: {mb / workers / busiest:.1f} MB per "
              f"CPU-second in each worker; with a core per process: {busiest:.1f} s, "
              f"{mb / busiest:.1f} MB/s", flush=True)
    else:
        print(f"    CPU s: {r['reader_cpu']:.1f} in one process: {mb / r['reader_cpu']:.1f} MB per "
              "CPU-second", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=90_000,
                        help="MIMIC-III rows of the synthetic corpus (90000: ~207 MB of note text)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-shards", type=int, default=8)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("CLINICAL_T5X_CACHE", "~/.cache/clinical_t5x")).expanduser())
    parser.add_argument("--min-mb", type=float, default=200.0, help="refuse a smaller corpus")
    parser.add_argument("--profile", action="store_true", help="cProfile the reading process")
    parser.add_argument("--dedup", nargs="+", default=["exact", "near"], choices=["off", "exact", "near"],
                        help="modes run back to back for each worker count (default: exact near)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds of the modes")
    args = parser.parse_args(argv)

    folder, text_bytes = corpus(args.cache, args.notes, args.seed)
    mb = text_bytes / MB
    if mb < args.min_mb:
        parser.error(f"corpus holds {mb:.0f} MB of note text < {args.min_mb:.0f} MB; raise --notes")
    print(f"corpus: {folder} ({mb:.1f} MB of note text); {os.cpu_count()} CPUs ({cpu_model()}), load average "
          f"{os.getloadavg()[0]:.1f} (a shared machine: wall-clock figures are noisy)")
    tf_cpu = tensorflow_import_cpu()
    print(f"TensorFlow import: {tf_cpu:.1f} CPU s (not in the timed runs: imported here, and by the fork "
          f"server in an untimed warm-up run for workers > 1)")
    import tensorflow  # noqa: F401, PLC0415 - the same start-up for every timed run
    out = Path(tempfile.mkdtemp(prefix="prepare_bench_"))
    first: dict[str, tuple[int, float]] = {}  # mode -> (workers, MB/s) of its first run: speed-ups
    try:
        if max(args.workers) > 1:
            warm_fork_server(out, max(args.workers))
        for workers in args.workers:
            totals = {mode: [0.0, 0.0] for mode in args.dedup}  # wall, busiest CPU
            for _ in range(args.repeats):
                for mode in args.dedup:
                    r = run_once(folder, out / "out", workers, args.num_shards, args.profile, mode)
                    busiest = max(r["worker_cpu"] + [r["reader_cpu"]])  # near: the reader clusters
                    totals[mode][0] += r["elapsed"]
                    totals[mode][1] += busiest
                    _print_run(workers, mode, r, mb, first.get(mode))
                    first.setdefault(mode, (workers, mb / r["elapsed"]))
            if "exact" in totals and "near" in totals:
                (wall_e, cpu_e), (wall_n, cpu_n) = totals["exact"], totals["near"]
                print(f"workers={workers}: --dedup near runs at x{wall_e / wall_n:.2f} the wall rate and "
                      f"x{cpu_e / cpu_n:.2f} the per-worker CPU rate of --dedup exact "
                      f"({args.repeats} interleaved round(s); target >= x0.50)", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
