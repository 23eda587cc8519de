"""Where the tasks read from: prepared TFRecord shards under a data dir chosen at first use.

The data dir is resolved lazily (gin `data_dir.path`, else `$CLINICAL_T5X_DATA_DIR`) so that
importing the tasks never touches the file system. Reading goes through seqio's file source:
given a `seqio.ShardInfo`, each host of a pod reads only its own files. Paths go through
`tf.io.gfile`, so `gs://` data dirs work.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import gin
import seqio
import tensorflow as tf

from clinical_t5x.data import shards

DATA_DIR_ENV = "CLINICAL_T5X_DATA_DIR"
SOURCES = ("mimic3", "mimic4_discharge", "mimic4_radiology")
FEATURES = shards.text_features()


@gin.configurable(module="clinical_t5x.tasks")
def data_dir(path: str | None = None) -> str:
    """The prepared data dir (output of `clinical-t5x prepare`): gin `data_dir.path`, else env."""
    path = path or os.environ.get(DATA_DIR_ENV)
    if not path:
        raise FileNotFoundError(f"no prepared data dir: set ${DATA_DIR_ENV} or gin "
                             "`clinical_t5x.tasks.data_dir.path` to the output of `clinical-t5x prepare`")
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"prepared data dir {path} does not exist (expected the output of "
                             "`clinical-t5x prepare`)")
    return path


def manifest_bytes_rate(directory: Callable[[], str], source: str) -> Callable[[seqio.Task], float]:
    """Mixture rate of one source: its train bytes in the manifest, read when mixing starts."""
    def rate(task: seqio.Task) -> float:
        kept = shards.read_manifest(directory())["kept"]["train"]
        return float(kept.get(source, {}).get("bytes", 0))
    return rate


class PreparedShards(seqio.TFExampleDataSource):
    """The `train`/`validation` shards of some sources; files listed when a dataset is built."""

    def __init__(self, directory: Callable[[], str], sources: Sequence[str]):
        self._directory, self._sources = directory, tuple(sources)
        super().__init__(split_to_filepattern={split: [] for split in shards.SPLITS},
                         feature_description=FEATURES)

    def list_shards(self, split: str) -> Sequence[str]:
        """This split's files as the manifest lists them (`shards.listed_shards`), sorted so
        that `ShardInfo` gives every host the same ones."""
        if split not in shards.SPLITS:
            raise ValueError(f"unknown split {split!r}: prepared data has {shards.SPLITS}")
        return shards.listed_shards(self._directory(), split, self._sources)

    def __str__(self) -> str:
        return f"PreparedShards({', '.join(self._sources)})"
