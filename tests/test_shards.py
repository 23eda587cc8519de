"""Shard naming and the manifest reader, including remote (`gs://`-style) data dirs."""
import json

import pytest
import tensorflow as tf

from clinical_t5x.data import shards


def _manifest(root: str, listed: dict) -> None:
    tf.io.gfile.makedirs(root)
    with tf.io.gfile.GFile(f"{root}/{shards.MANIFEST}", "w") as f:
        f.write(json.dumps({"format": shards.FORMAT, "shards": listed}))


def test_listed_shards_come_from_the_manifest_and_keep_url_schemes():
    root = "ram://prepared_listed"
    names = [shards.shard_name("mimic3", i, 2) for i in range(2)]
    assert names[1] == "mimic3-00001-of-00002.tfrecord"
    _manifest(root, {"train": {"mimic3": names[::-1], "mimic4_radiology": []}})
    for name in names + ["mimic3-00000-of-00009.tfrecord"]:  # the last one is not listed
        with tf.io.gfile.GFile(f"{root}/train/{name}", "w") as f:
            f.write("")
    assert shards.listed_shards(root, "train", ["mimic3", "mimic4_radiology"]) == [
        f"ram://prepared_listed/train/{name}" for name in names]
    with pytest.raises(FileNotFoundError, match="no train shards for mimic4_discharge: .*lists "
                                                "\\['mimic3', 'mimic4_radiology'\\]"):
        shards.listed_shards(root, "train", ["mimic4_discharge"])
    tf.io.gfile.remove(f"{root}/train/{names[0]}")
    with pytest.raises(FileNotFoundError, match=f"{names[0]}: listed in the manifest but missing"):
        shards.listed_shards(root, "train", ["mimic3"])


def test_unlisted_files_are_found(tmp_path):
    manifest = {"shards": {"train": {"mimic3": ["mimic3-00000-of-00001.tfrecord"]},
                           "validation": {"mimic3": []}}}
    for split, name in [("train", "mimic3-00000-of-00001.tfrecord"),
                        ("train", "mimic3-00003-of-00004.tfrecord"),
                        ("validation", "mimic3-00000-of-00001.tfrecord")]:
        (tmp_path / split).mkdir(exist_ok=True)
        (tmp_path / split / name).touch()
    assert shards.unlisted_files(tmp_path, manifest) == [
        "train/mimic3-00003-of-00004.tfrecord", "validation/mimic3-00000-of-00001.tfrecord"]


def test_read_manifest_through_tf_filesystems():
    root = "ram://prepared_for_test_shards"
    tf.io.gfile.makedirs(root)
    with pytest.raises(FileNotFoundError, match="not a finished"):
        shards.read_manifest(root)
    with tf.io.gfile.GFile(f"{root}/{shards.MANIFEST}", "w") as f:
        f.write(json.dumps({"format": shards.FORMAT, "rows_read": 3}))
    assert shards.read_manifest(root)["rows_read"] == 3
    other = "ram://prepared_in_another_format"
    tf.io.gfile.makedirs(other)
    with tf.io.gfile.GFile(f"{other}/{shards.MANIFEST}", "w") as f:
        f.write(json.dumps({"format": "other/9"}))
    with pytest.raises(ValueError, match="expected"):
        shards.read_manifest(other)
