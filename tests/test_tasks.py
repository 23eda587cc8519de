"""SeqIO tasks: registration, the synthetic default, packing, sharding, rates, vocabulary choice."""
from __future__ import annotations

import os
from pathlib import Path

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from clinical_t5x.data import shards

from clinical_t5x.text import span_corruption

from clinical_t5x import tasks
from clinical_t5x.data import synthetic_default
from clinical_t5x.tasks import sources
from clinical_t5x.tasks.vocabularies import VOCAB_DIR_ENV

LENGTHS = {"inputs": 512, "targets": 114}
ENV = (sources.DATA_DIR_ENV, VOCAB_DIR_ENV, synthetic_default.CACHE_ENV)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The synthetic default, built once into a private cache for this module."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV:
            mp.delenv(name, raising=False)
        mp.setenv(synthetic_default.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield synthetic_default.corpus_dir()


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _examples(name: str, count: int, split: str = "train", seed: int = 1) -> list[dict]:
    """The first examples of a task (shuffled with a small buffer, to stay fast) or mixture."""
    provider = seqio.get_mixture_or_task(name)
    if isinstance(provider, seqio.Mixture):
        ds = provider.get_dataset(LENGTHS, split=split, shuffle=False, seed=seed, num_epochs=1)
    else:
        ds = provider.get_dataset(LENGTHS, split=split, shuffle=True, seed=seed, num_epochs=1,
                                  shuffle_buffer_size=64)
    return list(ds.take(count).as_numpy_iterator())


_IMPORT_PROBE = """
import os, sys
watched = tuple(os.environ[name] for name in {names!r})
touched = []

def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.mkdir", "os.stat") and args:
        path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
        if path.startswith(watched):
            touched.append((event, path))

sys.addaudithook(audit)
import seqio
from clinical_t5x import tasks
for name in [*tasks.TASKS.values(), tasks.SYNTHETIC_TASK]:
    task = seqio.TaskRegistry.get(name)
    assert set(task.output_features) == {{"inputs", "targets"}}, name
    assert all(f.add_eos for f in task.output_features.values()), name
assert {{t.name for t in seqio.MixtureRegistry.get(tasks.MIXTURE).tasks}} == set(tasks.TASKS.values())
print("TOUCHED", touched)
"""


@pytest.mark.slow
def test_import_registers_everything_without_touching_files(tmp_path):
    """In a fresh interpreter (an earlier import in this one would prove nothing), importing
    the tasks registers all of them and opens, lists or creates nothing under the data,
    vocabulary or cache folders, which need not exist yet."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ENV:
        env[name] = str(tmp_path / name.lower())
    (tmp_path / synthetic_default.CACHE_ENV.lower()).mkdir()
    probe = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(names=ENV)], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert "TOUCHED []" in probe.stdout, probe.stdout
    assert not list((tmp_path / synthetic_default.CACHE_ENV.lower()).iterdir())


def test_missing_data_dir_is_named(monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="CLINICAL_T5X_DATA_DIR"):
        _examples("mimic3_span_corruption", 1)
    monkeypatch.setenv(sources.DATA_DIR_ENV, "/nonexistent/prepared")
    with pytest.raises(FileNotFoundError, match="/nonexistent/prepared does not exist"):
        _examples("mimic3_span_corruption", 1)


def test_data_dir_without_manifest_is_refused(corpus, tmp_path, monkeypatch):
    (tmp_path / "train").mkdir()  # an unfinished prepare: shards may exist, no manifest
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(VOCAB_DIR_ENV, str(corpus / "vocab"))
    with pytest.raises(FileNotFoundError, match=r"manifest.json not found"):
        _examples("mimic3_span_corruption", 1, split="validation")


@pytest.fixture(scope="module")
def synthetic_examples(corpus) -> list[dict]:
    return _examples(tasks.SYNTHETIC_TASK, 200, seed=1)


def test_synthetic_examples_are_span_corrupted_with_eos(synthetic_examples):
    examples = synthetic_examples
    vocabulary = seqio.get_mixture_or_task(tasks.SYNTHETIC_TASK).output_features["targets"].vocabulary
    sentinels = [vocabulary.sentinel_id(i) for i in range(100)]
    assert not set(sentinels) & set(vocabulary.tag_ids.values())
    assert sentinels == span_corruption.sentinel_ids(vocabulary, 100)
    full = [e for e in examples if len(e["inputs"]) == 512]
    assert len(full) > 0.9 * len(examples)
    for ex in examples:
        assert ex["inputs"][-1] == ex["targets"][-1] == vocabulary.eos_id
        assert ex["targets"][0] == sentinels[0]
        assert len(ex["inputs"]) <= 512 and len(ex["targets"]) <= 114
    assert all(len(ex["targets"]) == 114 for ex in full)
    assert vocabulary.decode([sentinels[0]]) == "<extra_id_0>"
    # DEID tags stay whole tokens inside the corrupted text.
    tags = set(vocabulary.tag_ids.values())
    assert any(tags & set(ex["inputs"].tolist()) for ex in examples)


@pytest.mark.slow
def test_deterministic_under_seed(synthetic_examples):
    """Same seed, same examples: file order, shuffling and span corruption (whose dependence on
    the seed test_span_corruption checks) all follow it."""
    again = _examples(tasks.SYNTHETIC_TASK, 20, seed=1)
    assert all(np.array_equal(a["inputs"], b["inputs"]) and np.array_equal(a["targets"], b["targets"])
               for a, b in zip(synthetic_examples[:20], again, strict=True))


@pytest.mark.slow
def test_packs_with_encdec_feature_converter(corpus):
    ds = seqio.get_dataset(tasks.SYNTHETIC_TASK, LENGTHS, dataset_split="validation", shuffle=False,
                           num_epochs=1, feature_converter=seqio.EncDecFeatureConverter(pack=True))
    batch = next(ds.batch(8).as_numpy_iterator())
    assert batch["encoder_input_tokens"].shape == (8, 512) and batch["decoder_target_tokens"].shape == (8, 114)
    assert set(batch) >= {"encoder_segment_ids", "encoder_positions", "decoder_segment_ids",
                          "decoder_positions", "decoder_input_tokens", "decoder_loss_weights"}
    assert (batch["decoder_input_tokens"][:, 0] == 0).all()
    np.testing.assert_array_equal(batch["decoder_loss_weights"], batch["decoder_target_tokens"] > 0)
    np.testing.assert_array_equal(batch["encoder_segment_ids"] > 0, batch["encoder_input_tokens"] > 0)


@pytest.mark.slow
def test_each_host_reads_only_its_files(corpus):
    source = seqio.get_mixture_or_task(tasks.SYNTHETIC_TASK).source

    def note_ids(shard_info=None) -> list[bytes]:
        ds = source.get_dataset("train", shuffle=False, shard_info=shard_info)
        return [ex["note_id"] for ex in ds.as_numpy_iterator()]

    hosts = [note_ids(seqio.ShardInfo(index=i, num_shards=2)) for i in range(2)]
    files = [source.list_shards("train")[i::2] for i in range(2)]
    assert not set(hosts[0]) & set(hosts[1])
    assert sorted(hosts[0] + hosts[1]) == sorted(note_ids())
    for host, host_files in zip(hosts, files):
        in_files = [ex["note_id"] for f in host_files for ex in
                    tf.data.TFRecordDataset(f).map(lambda r: tf.io.parse_single_example(r, sources.FEATURES))
                    .as_numpy_iterator()]
        assert sorted(host) == sorted(in_files)


@pytest.mark.slow
def test_mixture_rates_follow_manifest_bytes(corpus, monkeypatch):
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(corpus / "prepared"))
    monkeypatch.setenv(VOCAB_DIR_ENV, str(corpus / "vocab"))
    mixture = seqio.get_mixture_or_task(tasks.MIXTURE)
    kept = shards.read_manifest(str(corpus / "prepared"))["kept"]["train"]
    for source, name in tasks.TASKS.items():
        assert mixture.get_rate(seqio.get_mixture_or_task(name)) == kept[source]["bytes"] > 0
    examples = _examples(tasks.MIXTURE, 20)
    assert all(e["inputs"][-1] == 1 for e in examples)


def test_mixture_names_a_source_that_was_not_prepared(corpus, tmp_path, monkeypatch):
    prepared = corpus / "prepared"
    (tmp_path / "manifest.json").symlink_to(prepared / "manifest.json")
    for split in ("train", "validation"):
        (tmp_path / split).mkdir()
        for shard in prepared.glob(f"{split}/mimic3-*.tfrecord"):
            (tmp_path / split / shard.name).symlink_to(shard)
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(VOCAB_DIR_ENV, str(corpus / "vocab"))
    with pytest.raises(FileNotFoundError, match=r"validation/mimic4_discharge-00000-of-00002"
                                                 r"\.tfrecord: listed in the manifest but missing"):
        _examples(tasks.MIXTURE, 1, split="validation")


@pytest.mark.slow
def test_gin_selects_vocabulary_and_data_dir(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    (tmp_path / "mimic_cased").symlink_to(corpus / "vocab")
    monkeypatch.setenv(VOCAB_DIR_ENV, str(tmp_path))
    gin.parse_config([f"clinical_t5x.tasks.data_dir.path = '{corpus / 'prepared'}'",
                      "VOCABULARY = 'mimic_cased'"])
    vocabulary = seqio.get_mixture_or_task("mimic3_span_corruption").output_features["inputs"].vocabulary
    assert vocabulary.directory == (tmp_path / "mimic_cased").resolve()
    assert vocabulary == tasks.vocabulary_for()  # what t5x compares with the model's vocabulary
    assert len(_examples("mimic3_span_corruption", 3)) == 3
    gin.clear_config()
    gin.parse_config("VOCABULARY = 'mimic_lower'")  # a cased folder given for the lower-cased variant
    monkeypatch.setenv(VOCAB_DIR_ENV, str(corpus / "vocab"))
    with pytest.raises(ValueError, match="'mimic_lower' but .* holds a cased vocabulary"):
        tasks.vocabulary_for()
    gin.clear_config()
    monkeypatch.setenv(VOCAB_DIR_ENV, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="no vocabulary chosen"):
        tasks.vocabulary_for()


def test_a_shard_the_manifest_does_not_list_is_never_read(corpus, tmp_path):
    """A failed `prepare --overwrite` may leave an older run's shards beside the new ones."""
    prepared = corpus / "prepared"
    (tmp_path / "manifest.json").symlink_to(prepared / "manifest.json")
    for split in shards.SPLITS:
        (tmp_path / split).mkdir()
        for shard in prepared.glob(f"{split}/*.tfrecord"):
            (tmp_path / split / shard.name).symlink_to(shard)
    stale = shards.ShardWriter(tmp_path / "train" / shards.shard_name("mimic3", 0, 9))
    stale.write(shards.ExampleEncoder()(b"an older run", b"stale", 1, b"mimic3", b"Nursing"))
    stale.close()
    source = sources.PreparedShards(lambda: str(tmp_path), ["mimic3"])
    assert str(stale.path) not in source.list_shards("train")
    note_ids = {ex["note_id"] for ex in source.get_dataset("train", shuffle=False).as_numpy_iterator()}
    assert b"stale" not in note_ids and len(note_ids) > 100
