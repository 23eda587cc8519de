"""Training checkpoints in t5x's Orbax layout, safe against preemption and kill -9.

Layout (what real t5x's `OrbaxCheckpointManagerInterface` writes, so t5x tools and our
exporter read both trainers' checkpoints)::

    MODEL_DIR/checkpoint_<step>/
        state/        Orbax PyTree (OCDBT): {"target": params,
                                             "state": {"step": step, "param_states": opt_state}}
        dataset/      train_ds-<process>-of-<processes>: each host's input-pipeline position
        commit_success.txt, _CHECKPOINT_METADATA

Orbax writes each step into `checkpoint_<step>.orbax-checkpoint-tmp*` and renames it only
once every host has finished, after writing `commit_success.txt`; a checkpoint is COMPLETE
when it has its final name and that marker. Anything else (a temporary folder left by a
kill, a folder missing its marker) is skipped and moved aside, never fatal; a complete
checkpoint that cannot be read stops the run (`RestoreError`).

The data position is the host's `tf.data` iterator state (saved through the clu
`DatasetIterator` protocol: `save(path)` / `restore(path)`), so resuming costs the size of
the pipeline's buffers, not a replay of every consumed batch, and is exact. This module
never imports TensorFlow: the iterator object brings it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from typing import Any, Protocol

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from clinical_t5x import owner_only
from clinical_t5x.train.checkpoint_formats import COMMIT_MARKER, STATE_ITEM

log = logging.getLogger(__name__)

STEP_PREFIX = "checkpoint"
DATASET_ITEM = "dataset"
_STEP_DIR = re.compile(rf"^{STEP_PREFIX}_(\d+)$")


class RestoreError(RuntimeError):
    """A complete checkpoint could not be read (the message names its folder)."""


class DataIterator(Protocol):
    """A data iterator whose position can be saved (clu's `DatasetIterator` protocol)."""

    def save(self, filename: epath.Path) -> None: ...

    def restore(self, filename: epath.Path) -> None: ...


def model_path(model_dir: str | os.PathLike) -> epath.Path:
    """MODEL_DIR as a path Orbax accepts: a local folder made absolute, a URL (`gs://...`)
    kept as it is (pathlib would turn it into the local folder `gs:/...`, so the
    checkpoints would die with the machine)."""
    text = os.fspath(model_dir)
    return epath.Path(text if "://" in text else os.path.abspath(text))


def _is_local(path: epath.Path) -> bool:
    return "://" not in os.fspath(path)


def step_dir(model_dir: str | os.PathLike, step: int) -> epath.Path:
    """`MODEL_DIR/checkpoint_<step>` (t5x's name)."""
    return model_path(model_dir) / f"{STEP_PREFIX}_{step}"


def is_complete(path: str | os.PathLike) -> bool:
    """True for a finalised checkpoint folder: final name, commit marker, state item."""
    path = epath.Path(path)
    return bool(
        _STEP_DIR.match(path.name)
        and (path / COMMIT_MARKER).is_file()
        and (path / STATE_ITEM).is_dir()
    )


def complete_steps(model_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints in `model_dir`, ascending."""
    model_dir = model_path(model_dir)
    if not model_dir.is_dir():
        return []
    steps = []
    for child in model_dir.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and is_complete(child):
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_step(model_dir: str | os.PathLike) -> int | None:
    """The newest COMPLETE checkpoint's step, or None."""
    steps = complete_steps(model_dir)
    return steps[-1] if steps else None


def set_aside_incomplete(model_dir: str | os.PathLike) -> list[epath.Path]:
    """Renames step-named folders that lack the commit marker out of the step namespace.

    Such a folder would otherwise block the save of the same step when the run gets there
    again. Renamed (to `incomplete-checkpoint_<step>-<time>`), not deleted, so nothing a
    person may want to inspect is lost. Orbax's own temporary folders are left to Orbax,
    which removes them when the manager opens.
    """
    moved = []
    model_dir = model_path(model_dir)
    if not model_dir.is_dir() or jax.process_index() != 0:
        return moved
    for child in sorted(model_dir.iterdir()):
        if _STEP_DIR.match(child.name) and child.is_dir() and not is_complete(child):
            target = model_dir / f"incomplete-{child.name}-{time.strftime('%Y%m%dT%H%M%S')}"
            child.rename(target)
            log.warning("checkpoint folder %s is incomplete (no %s); moved to %s",
                        child, COMMIT_MARKER, target.name)
            moved.append(target)
    return moved


def to_t5x_tree(state: Any) -> dict[str, Any]:
    """A train state (step, params, opt_state) as t5x's state dict."""
    return {"target": state.params,
            "state": {"step": state.step, "param_states": state.opt_state}}


def from_t5x_tree(state: Any, tree: dict[str, Any]) -> Any:
    """`state` with its fields replaced by those of a t5x state dict."""
    return state.replace(params=tree["target"], step=tree["state"]["step"],
                         opt_state=tree["state"]["param_states"])


def _dataset_file(directory: epath.Path) -> epath.Path:
    return directory / f"train_ds-{jax.process_index():03d}-of-{jax.process_count():03d}"


class _DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores this host's data iterator position (one file per host)."""

    def save(self, directory: epath.Path, args: DataIteratorArgs) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        args.iterator.save(_dataset_file(directory))

    def restore(self, directory: epath.Path, args: DataIteratorArgs) -> DataIterator:
        path = _dataset_file(directory)
        if not epath.Path(f"{path}.index").exists():
            raise FileNotFoundError(
                f"{directory} has no data position for process {jax.process_index()} of "
                f"{jax.process_count()} (was the run resumed on a different host count?)")
        args.iterator.restore(path)
        return args.iterator


@ocp.args.register_with_handler(_DataIteratorHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class DataIteratorArgs(ocp.args.CheckpointArgs):
    iterator: DataIterator


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding skeleton of `state` (what a restore needs; no device memory)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


class Checkpointer:
    """Saves and restores train states (+ data position) under one model directory.

    Saves are asynchronous (Orbax copies the arrays to host memory before `save` returns,
    so the next, donating, train step can run while files are written); `keep` bounds the
    number of checkpoints kept (None keeps all).
    """

    def __init__(self, model_dir: str | os.PathLike, *, keep: int | None = None,
                 use_async: bool = True, data_iterator: DataIterator | None = None):
        self.model_dir = model_path(model_dir)
        if jax.process_index() == 0:
            self.model_dir.mkdir(parents=True, exist_ok=True, mode=owner_only.DIR_MODE)
            if _is_local(self.model_dir):  # object stores have no modes: bucket permissions
                os.chmod(self.model_dir, owner_only.DIR_MODE)
        set_aside_incomplete(self.model_dir)
        if jax.process_count() > 1:  # every host must see the same steps from here on
            multihost_utils.sync_global_devices("clinical_t5x.train.checkpoints:set_aside_incomplete")
        self._data_iterator = data_iterator
        self._unsealed: list[int] = []  # steps saved here whose files are not yet owner-only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            step_prefix=STEP_PREFIX,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=use_async,
            file_options=ocp.options.FileOptions(path_permission_mode=owner_only.DIR_MODE),
        )
        items = (STATE_ITEM, DATASET_ITEM) if data_iterator is not None else (STATE_ITEM,)
        self._manager = ocp.CheckpointManager(self.model_dir, options=options, item_names=items)

    def latest_step(self) -> int | None:
        """Newest complete step on disk (ignores a save still being written)."""
        return latest_step(self.model_dir)

    def save(self, state: Any, *, wait: bool = False) -> int:
        """Starts writing `state` as `checkpoint_<state.step>`; returns the step."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            log.info("checkpoint for step %d already exists", step)
            return step
        args = {STATE_ITEM: ocp.args.StandardSave(to_t5x_tree(state))}
        if self._data_iterator is not None:
            args[DATASET_ITEM] = DataIteratorArgs(self._data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**args), force=True)
        self._unsealed.append(step)
        if wait:
            self.wait_until_finished()
        return step

    def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, int] | None:
        """Restores the newest complete checkpoint (or `step`) into the layout of `state_like`.

        `state_like` is a train state or its `abstract_like` skeleton; shardings come from it.
        Only incomplete folders (no commit marker) are ever passed over, and those were set
        aside when the Checkpointer opened. A complete checkpoint that fails to read raises
        `RestoreError`: falling back to an older one would make the run save over the newer
        step's place in history (a transient storage error would silently fork the run).
        Returns (state, step), or None when MODEL_DIR holds no complete checkpoint.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                return None
        abstract = abstract_like(state_like)
        args = {STATE_ITEM: ocp.args.StandardRestore(to_t5x_tree(abstract))}
        if self._data_iterator is not None:
            args[DATASET_ITEM] = DataIteratorArgs(self._data_iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as err:  # noqa: BLE001 - re-raised with the folder it concerns
            raise RestoreError(
                f"cannot restore {step_dir(self.model_dir, step)} ({type(err).__name__}: {err}); "
                "the run stops rather than resume from an older step. If storage was briefly "
                "unavailable, rerun; if the folder is damaged, move it out of MODEL_DIR") from err
        return from_t5x_tree(state_like, restored[STATE_ITEM]), step

    def wait_until_finished(self) -> None:
        """Waits for pending writes, then makes the finished checkpoints' files owner-only
        (Orbax leaves them to the umask; a copied folder must not expose the weights or the
        data position)."""
        self._manager.wait_until_finished()
        for step in self._unsealed if jax.process_index() == 0 else ():
            path = step_dir(self.model_dir, step)
            if _is_local(path) and path.is_dir():  # absent when `keep` already removed it
                owner_only.restrict_tree(path)
        self._unsealed = []

    def close(self) -> None:
        """Waits for pending writes and releases Orbax's threads."""
        self.wait_until_finished()
        self._manager.close()
