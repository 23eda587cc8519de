"""The audit's note samples: seeded, independent of the shard layout, exclusions honoured."""

import pytest

from clinical_t5x.audit import notes
from clinical_t5x.data import prepare, synth


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("notes")
    raw = synth.write_synthetic(root / "raw", notes=60, seed=2)
    for shards_, name in ((1, "one"), (3, "three")):
        prepare.run(raw["mimic3"], out=root / name, num_shards=shards_, validation_fraction=0.3, progress=False)
    return root


def test_sample_is_seeded_and_does_not_depend_on_shards(prepared):
    first = notes.sample(prepared / "one", "train", 10, seed=0)
    assert len(first) == 10 and first == notes.sample(prepared / "three", "train", 10, seed=0)
    assert first != notes.sample(prepared / "one", "train", 10, seed=1)
    everything = notes.sample(prepared / "one", "validation", 10_000, seed=0)
    assert 0 < len(everything) < 60


def test_sample_leaves_out_excluded_notes(prepared):
    first = notes.sample(prepared / "one", "train", 5, seed=0)
    skipped = {(n.source, n.note_id) for n in first[:2]}
    again = notes.sample(prepared / "one", "train", 5, seed=0, exclude=skipped)
    assert not skipped & {(n.source, n.note_id) for n in again} and again[:3] == first[2:]


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards"):
        notes.sample(tmp_path, "train", 5, seed=0)
