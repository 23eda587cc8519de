"""Prepared shards: their names, their `tf.train.Example` records, owner-only TFRecord files.

Layout: `OUT/{split}/{source}-{shard:05d}-of-{num_shards:05d}.tfrecord`; every record is a
`tf.train.Example` with `text`, `note_id`, `source`, `category` (bytes) and `subject_id`
(int64). TensorFlow is imported on first use only, so that processes that merely read CSV
(and the `--help` of the CLI) never pay for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from clinical_t5x import owner_only

SPLITS: tuple[str, ...] = ("train", "validation")
FORMAT = "clinical_t5x.prepared/1"
MANIFEST = "manifest.json"


def shard_name(source: str, shard: int, num_shards: int) -> str:
    return f"{source}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def listed_shards(out_dir: str | Path, split: str, sources: Sequence[str]) -> list[str]:
    """The files of `split` for `sources` as `manifest.json` lists them, sorted (so every host
    of a pod sees the same list). Readers never glob: a shard left on disk by an earlier run
    that the manifest does not list is never read. Errors name the source or the missing file.

    Joined as strings, not Paths, so that `gs://` data dirs keep their double slash.
    """
    manifest = read_manifest(out_dir)
    listed = manifest["shards"].get(split, {})
    gfile = _tf().io.gfile
    files = []
    for source in sources:
        if source not in listed:
            raise FileNotFoundError(
                f"no {split} shards for {source}: {os.path.join(str(out_dir), MANIFEST)} lists "
                f"{sorted(listed) or 'none'} (prepare that source, or use the other sources' tasks)")
        files += [os.path.join(str(out_dir), split, name) for name in listed[source]]
    for path in files:
        if not gfile.exists(path):
            raise FileNotFoundError(f"{path}: listed in the manifest but missing; prepare again")
    return sorted(files)


def unlisted_files(out_dir: str | Path, manifest: dict) -> list[str]:
    """`split/name` of the shard files on disk that `manifest` does not list (readers skip them)."""
    listed = {f"{split}/{name}" for split, by_source in manifest["shards"].items()
              for names in by_source.values() for name in names}
    on_disk = {f"{split}/{path.name}" for split in SPLITS
               for path in Path(out_dir, split).glob("*.tfrecord")}
    return sorted(on_disk - listed)


def text_features() -> dict:
    """The `tf.io.parse_example` spec of what readers of prepared shards need: text and id."""
    tf = _tf()
    return {"text": tf.io.FixedLenFeature([], tf.string),
            "note_id": tf.io.FixedLenFeature([], tf.string)}


def read_manifest(out_dir: str | Path) -> dict:
    """The manifest of a prepared dir (local or `gs://`); a clear error when it is missing."""
    gfile = _tf().io.gfile
    path = os.path.join(str(out_dir), MANIFEST)
    if not gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {out_dir} is not a finished `clinical-t5x prepare` output")
    with gfile.GFile(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: PLC0415 - deliberately lazy (3-5 s import)

    return tf


class ExampleEncoder:
    """Serialises note records; reuses one `tf.train.Example` so each note costs a few µs."""

    def __init__(self) -> None:
        self._example = _tf().train.Example()
        feature = self._example.features.feature
        self._text = feature["text"].bytes_list.value
        self._note_id = feature["note_id"].bytes_list.value
        self._subject_id = feature["subject_id"].int64_list.value
        self._source = feature["source"].bytes_list.value
        self._category = feature["category"].bytes_list.value
        for values, empty in ((self._text, b""), (self._note_id, b""), (self._subject_id, 0),
                              (self._source, b""), (self._category, b"")):
            values.append(empty)

    def __call__(self, text: bytes, note_id: bytes, subject_id: int, source: bytes,
                 category: bytes) -> bytes:
        self._text[0] = text
        self._note_id[0] = note_id
        self._subject_id[0] = subject_id
        self._source[0] = source
        self._category[0] = category
        return self._example.SerializeToString(deterministic=True)


class ShardWriter:
    """One TFRecord shard, created owner-only; `write` takes serialised Examples."""

    def __init__(self, path: Path):
        self.path = path
        owner_only.create_file(path)
        self._writer = _tf().io.TFRecordWriter(str(path))

    def write(self, record: bytes) -> None:
        self._writer.write(record)

    def close(self) -> None:
        self._writer.close()


def read_examples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Decoded records of one shard (text as str): for tests, checks and small tools."""
    tf = _tf()
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        yield {
            "text": feature["text"].bytes_list.value[0].decode("utf-8"),
            "note_id": feature["note_id"].bytes_list.value[0].decode("utf-8"),
            "subject_id": int(feature["subject_id"].int64_list.value[0]),
            "source": feature["source"].bytes_list.value[0].decode("utf-8"),
            "category": feature["category"].bytes_list.value[0].decode("utf-8"),
        }
