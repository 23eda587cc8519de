"""Build vocabulary folders: T5's own SentencePiece model, or a unigram model trained on MIMIC.

A folder holds ``spiece.model``, ``clinical_vocab.json`` (what `clinical_t5x.text.vocab.load` reads)
and the matching Hugging Face tokenizer files, so `AutoTokenizer.from_pretrained(DIR)` works too.
A model trained on notes is derived from credentialed data, so every folder is owner-only.

Training follows T5's conventions (unigram, pad 0, eos 1, unk 2, no bos; lower-casing is the
``nmt_nfkc_cf`` normalisation rule, so it travels inside the model to every tokenizer). DEID tags
are taken out of the training text: they are ids after the sentinels, never pieces.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import sentencepiece as spm
import tensorflow as tf
from tqdm import tqdm

from clinical_t5x.data import deid, shards, synth

# SentencePiece skips longer training lines; notes are split into lines, so this is generous.

from clinical_t5x import owner_only

from clinical_t5x.text import tokenizer, vocab
MAX_LINE_BYTES = 1 << 14
# Cap on training lines SentencePiece loads (it samples them with the seeded generator).
MAX_TRAINING_LINES = 10_000_000
# SentencePiece's EM result depends on how its work is split across threads, not on the machine:
# a fixed count keeps a seed reproducible everywhere.
TRAINING_THREADS = 16
TRAIN_SPLIT = "train"
_TAG_RE = re.compile("|".join(re.escape(t) for t in sorted(deid.TAGS, key=len, reverse=True)))


def training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Non-blank lines of the notes with the DEID tags blanked out."""
    for text in texts:
        for line in _TAG_RE.sub(" ", text).splitlines():
            if line.strip():
                yield line


def train_spiece(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int, lowercase: bool,
                 seed: int, hard_vocab_limit: bool = True, num_threads: int = TRAINING_THREADS,
                 verbose: bool = False) -> Path:
    """Train a unigram model with T5's conventions; writes ``out_dir/spiece.model`` (owner-only).

    `verbose` shows SentencePiece's own progress log (sizes and EM objective, never text)."""
    out = Path(out_dir)
    owner_only.make_dir(out)
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_lines(texts), model_writer=model, model_type="unigram",
            vocab_size=vocab_size, hard_vocab_limit=hard_vocab_limit,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            character_coverage=0.9999, max_sentence_length=MAX_LINE_BYTES,
            input_sentence_size=MAX_TRAINING_LINES, shuffle_input_sentence=True,
            num_threads=num_threads, minloglevel=0 if verbose else 2)
    except RuntimeError as e:  # SentencePiece's messages hold sizes and flags, never text
        raise ValueError(f"SentencePiece training of {vocab_size} pieces failed: {e}") from None
    path = out / vocab.SPIECE_NAME
    _write_private(path, model.getvalue())
    return path


def _write_private(path: Path, data: bytes | str) -> None:
    """Owner-only before any byte goes in, also when `path` exists with a looser mode."""
    with owner_only.open_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_vocab_folder(out_dir: str | os.PathLike, source: str, details: dict[str, Any] | None = None) -> Path:
    """Complete a folder holding ``spiece.model``: quantise its scores (see `clinical_t5x.text.vocab`),
    add the HF tokenizer files and ``clinical_vocab.json``."""
    out = Path(out_dir)
    owner_only.make_dir(out)
    spiece = out / vocab.SPIECE_NAME
    proto = tokenizer.read_spiece(spiece)
    spec = proto.trainer_spec
    if (spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id) != (0, 1, 2, -1) or spec.model_type != spec.UNIGRAM:
        raise ValueError(f"{spiece}: not a T5-style unigram model (needs pad 0, eos 1, unk 2, no bos)")
    _write_private(spiece, vocab.quantize_scores(spiece.read_bytes()))
    proto = tokenizer.read_spiece(spiece)
    num_pieces = len(proto.pieces)
    added = vocab.added_tokens(num_pieces, deid.TAGS)
    size = num_pieces + len(added)
    config = {
        "format": vocab.CONFIG_FORMAT,
        "source": source,
        "lowercase": tokenizer.folds_case(proto),
        "normalizer": proto.normalizer_spec.name,
        "num_pieces": num_pieces,
        "num_sentinels": vocab.NUM_SENTINELS,
        "sentinel_ids": {"<extra_id_0>": num_pieces + vocab.NUM_SENTINELS - 1, "<extra_id_99>": num_pieces},
        "tags": list(deid.TAGS),
        "tag_ids": {tag: i for tag, i in added[vocab.NUM_SENTINELS:]},
        "vocab_size": size,
        "model_vocab_size": vocab.round_up(size),
        "score_bits": vocab.SCORE_BITS,
        "spiece_sha256": hashlib.sha256(spiece.read_bytes()).hexdigest(),
        **(details or {}),
    }
    tokenizer.save_hf_tokenizer(spiece, out)
    _write_private(out / vocab.CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out


def from_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, canonical: bool = False) -> Path:
    """Vocabulary folder for a Hugging Face T5 folder, reproducing its ids.

    A SentencePiece folder whose ids are canonical as far as they go (t5-base, SciFive: pieces
    and sentinels, no tags) becomes a canonical SentencePiece folder with the tags appended, as
    does any SentencePiece folder with `canonical`. Any other folder (tags added in another
    order, a ``tokenizer.json``-only Unigram) keeps its own ids, or moves sentinels and tags to the
    canonical ids with `canonical` (see `clinical_t5x.text.hf_folder_vocab`)."""
    from clinical_t5x.hf import token_layout
    from clinical_t5x.text import hf_folder_vocab

    hf_dir = Path(hf_dir)
    source = hf_dir / vocab.SPIECE_NAME
    layout = token_layout.read_layout(hf_dir)
    if layout is None:
        raise FileNotFoundError(f"{hf_dir}: neither tokenizer.json nor {vocab.SPIECE_NAME}; not a T5 tokenizer folder")
    if not source.is_file() or not (canonical or layout.is_canonical()):
        return hf_folder_vocab.write(hf_dir, out_dir, canonical)
    pieces = len(tokenizer.read_spiece(source).pieces)
    if pieces != layout.num_pieces:
        raise ValueError(f"{source} holds {pieces} pieces but tokenizer.json's first sentinel or tag "
                         f"is id {layout.num_pieces}")
    out = Path(out_dir)
    owner_only.make_dir(out)
    _write_private(out / vocab.SPIECE_NAME, source.read_bytes())
    return write_vocab_folder(out, "huggingface", {"origin": hf_dir.resolve().name})


def _sample_key(seed: int, shard_name: str, note_id: bytes) -> bytes:
    """Seeded hash of (source, note id): which notes are sampled does not depend on sharding."""
    return hashlib.blake2b(f"{seed}\0{shard_name.split('-')[0]}\0".encode() + note_id, digest_size=16).digest()


def _batches(records, path: Path) -> Iterator[dict]:
    """Parsed record batches; a malformed shard is named in the error (its text never is)."""
    try:
        yield from records.as_numpy_iterator()
    except tf.errors.OpError as e:
        raise ValueError(f"{path}: not a prepared shard (records need `text` and `note_id` "
                         f"features): {type(e).__name__}") from None


def sample_prepared_notes(prepared_dir: str | os.PathLike, sample_notes: int, seed: int) -> list[str]:
    """A deterministic sample of training notes: the `sample_notes` with the smallest seeded hash
    of (source, note_id), independent of shard count and order."""
    root = Path(prepared_dir)
    manifest = shards.read_manifest(root)
    sources = sorted(manifest["kept"][TRAIN_SPLIT])
    files = [Path(f) for f in shards.listed_shards(root, TRAIN_SPLIT, sources)]
    if not files:
        raise FileNotFoundError(f"no training shards listed in {root / shards.MANIFEST}")
    total = sum(int(v["notes"]) for v in manifest["kept"][TRAIN_SPLIT].values())
    features = shards.text_features()
    heap: list[tuple[int, str]] = []  # the kept notes, keyed by minus their hash (a max-heap)
    with tqdm(total=total, desc="sampling notes", unit="note", file=sys.stderr) as bar:
        for path in files:
            records = tf.data.TFRecordDataset(str(path)).batch(1024).map(
                lambda r: tf.io.parse_example(r, features))
            row = 0
            for batch in _batches(records, path):
                for note_id, text in zip(batch["note_id"], batch["text"]):
                    try:
                        decoded = text.decode("utf-8")
                    except UnicodeDecodeError:
                        raise ValueError(f"{path} row {row}: text is not UTF-8") from None
                    key = -int.from_bytes(_sample_key(seed, path.name, note_id), "big")
                    if len(heap) < sample_notes:
                        heapq.heappush(heap, (key, decoded))
                    elif key > heap[0][0]:
                        heapq.heapreplace(heap, (key, decoded))
                    row += 1
                bar.update(len(batch["text"]))
    return [text for _, text in sorted(heap, reverse=True)]


def build_from_prepared(prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, vocab_size: int = 32000,
                        lowercase: bool = False, sample_notes: int = 100_000, seed: int = 0) -> Path:
    """Train on a sample of the prepared training shards and write the vocabulary folder."""
    notes = sample_prepared_notes(prepared_dir, sample_notes, seed)
    print(f"training a {vocab_size}-piece unigram model on {len(notes)} notes", file=sys.stderr)
    train_spiece(notes, out_dir, vocab_size, lowercase, seed, verbose=True)
    return write_vocab_folder(out_dir, "mimic", {"training": {
        "vocab_size": vocab_size, "sample_notes": sample_notes, "notes_used": len(notes), "seed": seed}})


def build_synthetic_vocab(out_dir: str | os.PathLike, vocab_size: int = 2000, seed: int = 0,
                          lowercase: bool = False) -> Path:
    """A small vocabulary folder from DEID-replaced synthetic notes, for tests and the demo (seconds)."""
    notes = deid.replace_list_of_notes(synth.synthetic_notes(2000, seed))
    train_spiece(notes, out_dir, vocab_size, lowercase, seed, hard_vocab_limit=False)
    return write_vocab_folder(out_dir, "synthetic", {"training": {"vocab_size": vocab_size, "seed": seed}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clinical-t5x vocab", description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-hf", metavar="HF_DIR", help="Hugging Face T5 folder whose tokenizer to reproduce, id for id")
    src.add_argument("--prepared", metavar="DIR", help="prepared shards (clinical-t5x prepare) to train on")
    parser.add_argument("--out", required=True, help="vocabulary folder to write (owner-only)")
    parser.add_argument("--vocab-size", type=int, default=32000, help="SentencePiece pieces (default 32000)")
    parser.add_argument("--lowercase", action="store_true", help="lower-case the text (scratch vocabulary)")
    parser.add_argument("--sample-notes", type=int, default=100_000, help="training notes sampled (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--canonical", action="store_true",
                        help="with --from-hf: move sentinels and DEID tags to the canonical ids "
                             "(pair with import-hf --canonical)")
    args = parser.parse_args(argv)
    if args.from_hf and args.lowercase:
        parser.error("--lowercase trains a new model; T5's own model (--from-hf) is cased")
    if args.canonical and not args.from_hf:
        parser.error("--canonical applies to --from-hf")
    if args.sample_notes < 1 or args.vocab_size < 1:
        parser.error("--sample-notes and --vocab-size must be positive")
    try:
        if args.from_hf:
            out = from_hf(args.from_hf, args.out, args.canonical)
        else:
            out = build_from_prepared(args.prepared, args.out, args.vocab_size, args.lowercase,
                                      args.sample_notes, args.seed)
    except (OSError, ValueError) as e:
        print(f"clinical-t5x vocab: error: {e}", file=sys.stderr)
        return 1
    config = json.loads((out / vocab.CONFIG_NAME).read_text())
    keys = ("source", "layout", "lowercase", "num_pieces", "vocab_size", "model_vocab_size", "appended")
    print(json.dumps({k: config[k] for k in keys if k in config} | {"out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
