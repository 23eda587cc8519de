"""Input-pipeline throughput: packed 512/114 examples per second per CPU core, and where it goes.

Reads prepared shards through a whole span-corruption task and `seqio.EncDecFeatureConverter`
(pack=True), the way t5x consumes it, pinned to `--cores` CPU cores (default 1: the process's
affinity and tf.data's thread pool). Each stage is timed as a cumulative pipeline over the same
notes, and the differences say where the time goes:

  read      TFRecord shards -> parsed `text`
  tokenize  + SentencePiece/DEID-tag tokenisation
  corrupt   + concatenation, chunking and span corruption (+ EOS)
  pack      + EncDecFeatureConverter(pack=True)

Without `--data-dir`, a synthetic corpus of `--notes` MIMIC-III rows (+ MIMIC-IV) and a
synthetic vocabulary are built in a temporary folder first (not timed). Tokenisation cost grows
with the text bytes per token, which the report prints: a 32k-piece vocabulary on real notes
packs more bytes into each token than the small synthetic one. Target: >= 250/s/core.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from clinical_t5x.data import shards  # noqa: E402
from clinical_t5x.tasks import PREPROCESSORS, output_features, sources  # noqa: E402
from clinical_t5x.text.vocab import load  # noqa: E402

STAGES = ("read", "tokenize", "corrupt", "pack")


def build_synthetic(root: Path, notes: int, vocab_size: int) -> tuple[str, str]:
    """A prepared synthetic corpus and a vocabulary trained on it, in `root`."""
    from clinical_t5x.data import prepare, synth  # noqa: PLC0415
    from clinical_t5x.text import vocab_build

    raw = synth.write_synthetic(root / "raw", notes=notes, seed=0)
    prepare.run(mimic3=raw["mimic3"], mimic4_dir=root / "raw" / "note", out=root / "prepared",
                num_shards=8, progress=False)
    vocab_build.build_synthetic_vocab(root / "vocab", vocab_size=vocab_size, seed=0)
    return str(root / "prepared"), str(root / "vocab")


def stage_datasets(data_dir: str, vocab_dir: str, lengths: dict[str, int], cores: int) -> dict[str, tf.data.Dataset]:
    """The four cumulative pipelines over the train split of all sources, in read order."""
    vocabulary = load(vocab_dir)
    task = seqio.Task("benchmark_span_corruption", sources.PreparedShards(lambda: data_dir, sources.SOURCES),
                      preprocessors=list(PREPROCESSORS), output_features=output_features(vocabulary))
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    options.threading.max_intra_op_parallelism = 1
    read = task.source.get_dataset("train", shuffle=False)
    tokenized = task.preprocess_precache(read, seed=0)
    corrupted = task.get_dataset(lengths, split="train", shuffle=False, seed=0, num_epochs=1)
    packed = seqio.EncDecFeatureConverter(pack=True)(corrupted, lengths)
    stages = {"read": read.map(lambda ex: ex["text"]), "tokenize": tokenized,
              "corrupt": corrupted, "pack": packed}
    return {name: ds.with_options(options) for name, ds in stages.items()}


def count_elements(ds: tf.data.Dataset) -> tuple[float, int]:
    """(seconds, elements) of one full pass, counted inside the graph: a trainer fetches whole
    batches, so Python's cost per element (~0.1-0.3 ms) is not part of the pipeline's."""
    start = time.perf_counter()
    count = int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    return time.perf_counter() - start, count


def time_stages(datasets: dict[str, tf.data.Dataset], repeats: int) -> dict[str, tuple[float, int]]:
    """Fastest pass of each stage; passes of all stages interleave so load changes on a shared
    machine hit every stage alike."""
    best: dict[str, tuple[float, int]] = {}
    for _ in range(repeats):
        for name, ds in datasets.items():
            seconds, count = count_elements(ds)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, count)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="prepared shards (default: build a synthetic corpus)")
    parser.add_argument("--vocab-dir", help="vocabulary folder (default: a synthetic vocabulary)")
    parser.add_argument("--notes", type=int, default=3000, help="synthetic MIMIC-III rows to build")
    parser.add_argument("--vocab-size", type=int, default=2000,
                        help="synthetic vocabulary pieces asked for (synthetic text supports ~1,100)")
    parser.add_argument("--cores", type=int, default=1, help="CPU cores to pin the process to")
    parser.add_argument("--repeats", type=int, default=3, help="passes per stage; the fastest counts")
    parser.add_argument("--inputs-length", type=int, default=512)
    parser.add_argument("--targets-length", type=int, default=114)
    args = parser.parse_args(argv)
    if bool(args.data_dir) != bool(args.vocab_dir):
        parser.error("give both --data-dir and --vocab-dir, or neither")
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    lengths = {"inputs": args.inputs_length, "targets": args.targets_length}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, vocab_dir = args.data_dir, args.vocab_dir
        if not data_dir:
            print(f"building a synthetic corpus ({args.notes} notes, {args.vocab_size}-piece vocabulary)...",
                  file=sys.stderr)
            data_dir, vocab_dir = build_synthetic(Path(tmp), args.notes, args.vocab_size)
        datasets = stage_datasets(data_dir, vocab_dir, lengths, args.cores)
        timings = time_stages(datasets, args.repeats)
        vocabulary = load(vocab_dir)
        text_bytes = sum(s["bytes"] for s in shards.read_manifest(data_dir)["kept"]["train"].values())
        tokens = int(datasets["tokenize"].reduce(0, lambda n, ex: n + tf.size(ex["targets"])))
    packed = timings["pack"][1]
    total = timings["pack"][0]
    print(f"pinned to {args.cores} core(s); {packed} packed {args.inputs_length}/{args.targets_length} examples "
          f"from {timings['read'][1]} notes ({timings['corrupt'][1]} span-corrupted examples); "
          f"{vocabulary.num_pieces}-piece vocabulary, {text_bytes / tokens:.2f} text bytes per token")
    previous = 0.0
    for name in STAGES:
        seconds = timings[name][0]
        share = seconds - previous
        print(f"  {name:<9} {share * 1e3 / packed:7.3f} ms per packed example ({100 * share / total:5.1f}%)")
        previous = seconds
    per_core = packed / total / args.cores
    print(f"throughput: {packed / total:.0f} packed examples/s = {per_core:.0f} per core "
          f"(target >= 250 per core: {'met' if per_core >= 250 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
