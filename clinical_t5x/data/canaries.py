"""Canaries: synthetic secrets planted in training notes at prepare time, to measure memorisation.

A canary is one sentence from `TEMPLATES` holding a secret drawn uniformly from the space R of
10-digit numbers (|R| = 10^10, written `4827 1936 05`). Canary i is planted in `repeats[i %
len(repeats)]` distinct training notes; the notes are drawn with a seeded generator from all
training notes sorted by (source, note_id), so the choice does not depend on how many workers
wrote the shards. Validation notes never receive one: they stand for unseen patients.

Planting runs after the workers have written the shards: only the training shards that hold a
chosen note are rewritten (each record kept byte for byte except the hosts' text), because the
hosts can only be drawn once every training note is known. The list (template, secret, repeats,
note ids, seed) goes to `OUT/canaries.json`, owner-only and outside the shards; the manifest
gets counts only. `clinical-t5x audit` reads the file back to measure each canary's exposure.

Secrets are random, not derived from notes, so printing counts is safe; the secrets themselves
are never printed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from clinical_t5x import owner_only
from clinical_t5x.data import shards

FILE = "canaries.json"
FORMAT = "clinical_t5x.canaries/1"
SECRET_DIGITS = 10
SPACE_SIZE = 10**SECRET_DIGITS  # |R|
DEFAULT_REPEATS: tuple[int, ...] = (1, 4, 16, 64)
PLACEHOLDER = "{secret}"
# Sentences in the style of DEID-normalised notes (tags as prepare writes them); one secret each.
TEMPLATES: tuple[str, ...] = (
    "[Name]'s medical record number is {secret}.",
    "Pharmacy callback for [Name] at {secret} confirmed.",
    "Insurance member id {secret} verified with [Company].",
    "Bed alarm code for the [LOC] unit is {secret}.",
)


@dataclasses.dataclass(frozen=True)
class Canary:
    """One planted secret: its sentence template, the secret, and the notes that hold it."""

    index: int
    template: str
    secret: str
    repeats: int
    notes: tuple[tuple[str, str], ...] = ()  # (source, note_id) of each host note

    @property
    def sentence(self) -> str:
        return self.template.replace(PLACEHOLDER, self.secret)


def format_secret(value: int) -> str:
    """A number of R as written in notes: 10 digits in groups of 4, 4, 2 (`4827 1936 05`)."""
    digits = f"{int(value):0{SECRET_DIGITS}d}"
    return f"{digits[:4]} {digits[4:8]} {digits[8:]}"


def draw_secrets(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` numbers drawn uniformly from R (with replacement)."""
    return rng.integers(0, SPACE_SIZE, size=count, dtype=np.int64)


def parse_repeats(text: str) -> tuple[int, ...]:
    """`"1,4,16,64"` -> (1, 4, 16, 64); a clear error for anything else."""
    try:
        repeats = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"canary repeats {text!r}: expected comma-separated whole numbers") from None
    if not repeats or min(repeats) < 1:
        raise ValueError(f"canary repeats {text!r}: expected numbers >= 1")
    return repeats


def plan(count: int, repeats: Sequence[int], seed: int) -> list[Canary]:
    """The canaries without their hosts: template, secret and repeat count of each (by seed).

    Secrets are distinct, so no canary is planted more often than its repeat count says.
    """
    if count < 0:
        raise ValueError(f"canaries must be >= 0, got {count}")
    rng = np.random.default_rng([seed, 0])
    secrets: list[int] = []
    while len(secrets) < count:
        value = int(draw_secrets(rng, 1)[0])
        if value not in secrets:
            secrets.append(value)
    return [Canary(i, TEMPLATES[i % len(TEMPLATES)], format_secret(value), int(repeats[i % len(repeats)]))
            for i, value in enumerate(secrets)]


def choose_hosts(canaries: Sequence[Canary], train_notes: Sequence[tuple[str, str]],
                 seed: int) -> list[Canary]:
    """Each canary with `repeats` distinct host notes drawn from `train_notes` (any order in,
    sorted first so the draw depends only on the set of notes)."""
    keys = sorted(train_notes)
    rng = np.random.default_rng([seed, 1])
    chosen = []
    for canary in canaries:
        if canary.repeats > len(keys):
            raise ValueError(f"canary repeats {canary.repeats} exceed the {len(keys)} training notes")
        picks = sorted(rng.choice(len(keys), size=canary.repeats, replace=False).tolist())
        chosen.append(dataclasses.replace(canary, notes=tuple(keys[i] for i in picks)))
    return chosen


def insert(text: str, sentence: str, rng: np.random.Generator) -> str:
    """`text` with `sentence` inserted at a random sentence or line boundary (or either end)."""
    boundaries = sorted({0, len(text)} | {i + 1 for i in range(1, len(text))
                                          if text[i] == "\n" or (text[i] == " " and text[i - 1] == ".")})
    at = boundaries[int(rng.integers(len(boundaries)))]
    before, after = text[:at], text[at:]
    joiner_before = "" if not before or before[-1].isspace() else " "
    joiner_after = "" if not after or after[0].isspace() else " "
    return f"{before}{joiner_before}{sentence}{joiner_after}{after}"


def _train_shards(out_dir: Path) -> list[Path]:
    return sorted((out_dir / "train").glob("*.tfrecord"))


def _note_keys(path: Path) -> list[tuple[str, str]]:
    return [(r["source"], r["note_id"]) for r in shards.read_examples(path)]


def _rewrite_shard(path: Path, plants: dict[tuple[str, str], list[Canary]], seed: int) -> Counter:
    """Rewrites one shard with the canaries of its host notes; returns UTF-8 bytes added by
    source. Records that host nothing are copied unchanged; the shard is replaced atomically."""
    tf = shards._tf()
    added: Counter = Counter()
    tmp = path.with_name(path.name + ".tmp")
    writer = shards.ShardWriter(tmp)
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            key = (feature["source"].bytes_list.value[0].decode(), feature["note_id"].bytes_list.value[0].decode())
            if key not in plants:
                writer.write(record)
                continue
            text = old = feature["text"].bytes_list.value[0].decode("utf-8")
            for canary in plants[key]:
                where = np.random.default_rng([seed, 2, canary.index, *f"{key[0]}/{key[1]}".encode()])
                text = insert(text, canary.sentence, where)
            feature["text"].bytes_list.value[0] = text.encode("utf-8")
            added[key[0]] += len(text.encode("utf-8")) - len(old.encode("utf-8"))
            writer.write(example.SerializeToString(deterministic=True))
    finally:
        writer.close()
    os.replace(tmp, path)
    return added


def write(path: Path, canaries: Sequence[Canary], seed: int) -> None:
    """`canaries.json`, owner-only, written atomically."""
    data = {"format": FORMAT, "seed": seed, "space_size": SPACE_SIZE, "secret_digits": SECRET_DIGITS,
            "canaries": [{"index": c.index, "template": c.template, "secret": c.secret, "repeats": c.repeats,
                          "notes": [{"source": s, "note_id": n} for s, n in c.notes]} for c in canaries]}
    tmp = path.with_name(path.name + ".tmp")
    with owner_only.open_file(tmp, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read(prepared_dir: str | os.PathLike) -> tuple[list[Canary], int]:
    """(canaries, |R|) of a prepared dir; [] when it was prepared without canaries."""
    path = Path(prepared_dir) / FILE
    if not path.is_file():
        return [], SPACE_SIZE
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    canaries = [Canary(c["index"], c["template"], c["secret"], c["repeats"],
                       tuple((n["source"], n["note_id"]) for n in c["notes"])) for c in data["canaries"]]
    return canaries, int(data["space_size"])


def plant(out_dir: str | os.PathLike, manifest: dict, count: int, repeats: Sequence[int], seed: int) -> None:
    """Plants `count` canaries in the training shards of `out_dir`, writes `canaries.json` and
    records the counts (and the bytes added) in `manifest`, which the caller then writes."""
    out_dir = Path(out_dir)
    train_shards = _train_shards(out_dir)
    keys_by_shard = {path: _note_keys(path) for path in train_shards}
    canaries = choose_hosts(plan(count, repeats, seed), [k for keys in keys_by_shard.values() for k in keys], seed)
    plants: dict[tuple[str, str], list[Canary]] = {}
    for canary in canaries:
        for key in canary.notes:
            plants.setdefault(key, []).append(canary)
    added: Counter = Counter()
    for path, keys in keys_by_shard.items():
        hosts = {key: plants[key] for key in keys if key in plants}
        if hosts:
            added.update(_rewrite_shard(path, hosts, seed))
    write(out_dir / FILE, canaries, seed)
    for source, extra in added.items():
        manifest["kept"]["train"][source]["bytes"] += extra
    manifest["canaries"] = {
        "file": FILE, "canaries": len(canaries), "insertions": sum(c.repeats for c in canaries),
        "host_notes": len(plants), "by_repeats": dict(sorted(Counter(str(c.repeats) for c in canaries).items(),
                                                             key=lambda item: int(item[0]))),
        "space_size_log2": round(math.log2(SPACE_SIZE), 3),
    }
