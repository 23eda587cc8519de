"""One prepare worker: shard ownership, mergeable counts, failures reported without text."""
import queue
from collections import Counter

import pytest

from clinical_t5x.data import prepare_worker


def _config(tmp_path, workers=3):
    for split in ("train", "validation"):
        (tmp_path / split).mkdir(exist_ok=True)
    return prepare_worker.WorkerConfig(
        out_dir=tmp_path, sources=("mimic3",), num_shards={"train": 8, "validation": 3},
        workers=workers, typed_mimic4=False, validation_fraction=0.0, categories=None,
        exclude_categories=frozenset(), excluded_subjects=frozenset())


def test_every_shard_has_exactly_one_owner(tmp_path):
    config = _config(tmp_path)
    owned = [config.owned_shards(w) for w in range(config.workers)]
    for split, count in config.num_shards.items():
        shards = sorted(s for o in owned for s in o[split])
        assert shards == list(range(count))
    assert config.path("train", "mimic3", 2).name == "mimic3-00002-of-00008.tfrecord"


def test_results_merge_by_adding():
    a, b = prepare_worker.WorkerResult(), prepare_worker.WorkerResult()
    a.notes["train", "mimic3"] += 2
    b.notes["train", "mimic3"] += 3
    b.dropped["mimic3", "empty"] += 1
    a.subjects["train"].add(1)
    b.subjects["train"].add(2)
    a.merge(b)
    assert a.notes == Counter({("train", "mimic3"): 5}) and a.dropped["mimic3", "empty"] == 1
    assert a.subjects["train"] == {1, 2}


class _Boom:
    """An inbox whose task raises an error whose message quotes note text."""

    def get(self):
        raise ValueError("Patient Mary Jones said ...")


def test_a_failing_worker_reports_the_error_type_never_its_message(tmp_path):
    results = queue.Queue()
    with pytest.raises(SystemExit):
        prepare_worker.worker_process(_config(tmp_path, workers=1), 0, _Boom(), results)
    assert results.get_nowait() == ("error", 0, "ValueError")
