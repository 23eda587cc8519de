"""Shard naming and the manifest reader, including remote (`gs://`-style) data dirs."""
import json

import pytest
import tensorflow as tf

from clinical_t5x.data import shards


def test_shard_pattern_keeps_url_schemes():
    assert shards.shard_pattern("gs://bucket/prep", "train", "mimic3") == (
        "gs://bucket/prep/train/mimic3-*.tfrecord")
    assert shards.shard_name("mimic3", 2, 8) == "mimic3-00002-of-00008.tfrecord"


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
