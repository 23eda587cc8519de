"""The built-in synthetic default: a small prepared corpus and vocabulary, built once per cache.

On first use the package writes synthetic MIMIC look-alike files, prepares them into shards and
trains a small vocabulary, all from fixed seeds, under `$CLINICAL_T5X_CACHE`
(default `~/.cache/clinical_t5x`). It is built in a private temporary folder and renamed into
place, so a half-built corpus never looks complete and two processes building at once both end
up using one finished copy.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "CLINICAL_T5X_CACHE"
DEFAULT_CACHE = "~/.cache/clinical_t5x"
# MIMIC-III rows (MIMIC-IV files get 1/8 + 1/4 as many): ~4 MB of text, built in seconds.
NOTES = 2000
SEED = 0
VOCAB_SIZE = 2000
# Bump when what is built changes, so stale caches are not reused.
VERSION = f"synthetic-v2-notes{NOTES}-seed{SEED}-vocab{VOCAB_SIZE}"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _build(into: Path) -> None:
    from clinical_t5x.data import prepare, synth  # noqa: PLC0415 - only on first use
    from clinical_t5x.text import vocab_build

    raw = synth.write_synthetic(into / "raw", notes=NOTES, seed=SEED)
    prepare.run(mimic3=raw["mimic3"], mimic4_dir=into / "raw" / "note", out=into / "prepared",
                validation_fraction=0.05, num_shards=4, validation_shards=2, progress=False)
    vocab_build.build_synthetic_vocab(into / "vocab", vocab_size=VOCAB_SIZE, seed=SEED)
    shutil.rmtree(into / "raw")


@functools.lru_cache(maxsize=None)
def _corpus(root: Path) -> Path:
    final = root / VERSION
    if final.is_dir():
        return final
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{VERSION}.", dir=root))  # owner-only
    try:
        _build(building)
        os.rename(building, final)
    except OSError:
        if not final.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def corpus_dir() -> Path:
    """The cached synthetic corpus (`prepared/`, `vocab/`), built on first call."""
    return _corpus(cache_root())


def prepared_dir() -> str:
    return str(corpus_dir() / "prepared")


def vocab_dir() -> str:
    return str(corpus_dir() / "vocab")
