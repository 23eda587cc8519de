"""The built-in synthetic default: built once per cache, deterministically, race-safe, owner-only."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from clinical_t5x.data import shards, synthetic_default


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(synthetic_default.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield synthetic_default.corpus_dir()


def test_corpus_has_a_manifest_its_shards_and_a_vocabulary(corpus):
    assert corpus.name == synthetic_default.VERSION
    manifest = shards.read_manifest(corpus / "prepared")
    for split in shards.SPLITS:
        listed = shards.listed_shards(corpus / "prepared", split, sorted(manifest["shards"][split]))
        assert listed and all(Path(path).is_file() for path in listed)
    assert (corpus / "vocab" / "spiece.model").is_file()
    assert synthetic_default.prepared_dir() == str(corpus / "prepared")
    assert synthetic_default.vocab_dir() == str(corpus / "vocab")
    assert not (corpus / "raw").exists()  # the synthetic CSVs are not kept


@pytest.mark.slow
def test_cache_build_is_deterministic_and_race_safe(corpus, tmp_path):
    results: list[Path] = []
    racers = [threading.Thread(target=lambda: results.append(synthetic_default._corpus.__wrapped__(tmp_path)))
              for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert results == [tmp_path / synthetic_default.VERSION] * 2
    assert os.listdir(tmp_path) == [synthetic_default.VERSION]  # no half-built copy left behind
    for name in ("vocab/spiece.model", "prepared/train/mimic3-00000-of-00004.tfrecord"):
        assert (tmp_path / synthetic_default.VERSION / name).read_bytes() == (corpus / name).read_bytes()
    assert oct((tmp_path / synthetic_default.VERSION).stat().st_mode & 0o777) == "0o700"


def test_a_finished_corpus_is_reused_not_rebuilt(corpus, monkeypatch):
    monkeypatch.setattr(synthetic_default, "_build", lambda into: pytest.fail("rebuilt"))
    assert synthetic_default._corpus.__wrapped__(corpus.parent) == corpus
