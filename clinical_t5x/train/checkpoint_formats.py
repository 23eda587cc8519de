"""Read parameters from any t5x-layout checkpoint; write a params-only one.

Three on-disk formats hold the same state dict
`{"target": params, "state": {"step": ..., "param_states": ...}}`:

* t5x's Orbax layout (and our trainer's): `MODEL_DIR/checkpoint_<step>/state/` is an Orbax
  PyTree checkpoint (OCDBT), one array per key `target.encoder.layers_0....`.
* an Orbax PyTree written directly into `checkpoint_<step>/` (no `state/` item folder).
* t5x's older layout: `checkpoint_<step>/checkpoint` is a msgpack file
  `{"version": 3, "optimizer": state_dict}` whose large leaves are tensorstore (zarr) specs
  with a path relative to the step folder (`target.encoder.layers_0.attention.query.kernel`);
  small leaves are numpy arrays inline.

`ParamReader` lists the parameter names and shapes first and reads one tensor at a time, so
that export never holds more than one tensor beyond what it is writing. No TensorFlow here:
this module must run on GPU images without it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clinical_t5x import owner_only

STATE_ITEM = "state"  # t5x's Orbax item holding the train state
MSGPACK_FILE = "checkpoint"  # t5x's legacy msgpack file inside checkpoint_<step>/
ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_sharding")
COMMIT_MARKER = "commit_success.txt"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


class CheckpointFormatError(ValueError):
    """A path that is not a readable t5x-layout checkpoint (the message names the path)."""


# --------------------------------------------------------------------------- locating


def _is_orbax_tree(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in ORBAX_MARKERS)


def _is_msgpack_step(path: Path) -> bool:
    return (path / MSGPACK_FILE).is_file()


def _is_complete_step(path: Path) -> bool:
    """Orbax (ours and t5x's) renames a step folder into place and marks it with
    `commit_success.txt`; t5x's msgpack writer renames a temporary folder holding the
    `checkpoint` file. A folder lacking both was interrupted and is never chosen."""
    orbax = _is_orbax_tree(path / STATE_ITEM) or _is_orbax_tree(path)
    return (orbax and (path / COMMIT_MARKER).is_file()) or _is_msgpack_step(path)


def _is_readable_step(path: Path) -> bool:
    return _is_orbax_tree(path / STATE_ITEM) or _is_orbax_tree(path) or _is_msgpack_step(path)


def step_dirs(model_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, folder)` of the complete `checkpoint_<step>` folders in `model_dir`, oldest first."""
    found = []
    for child in Path(model_dir).iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and _is_complete_step(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_step_dir(path: str | os.PathLike) -> Path:
    """The `checkpoint_<step>` folder for `path`: that folder itself (named explicitly, it is
    read even without a commit marker) or, for a MODEL_DIR, its newest complete step. The
    error names the path and what was looked for."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointFormatError(f"checkpoint path {path} is not a directory")
    if _is_readable_step(path):
        return path
    steps = step_dirs(path)
    if not steps:
        raise CheckpointFormatError(
            f"{path} holds no complete t5x checkpoint: expected checkpoint_<step>/ with an Orbax "
            f"tree (state/_METADATA) or a msgpack '{MSGPACK_FILE}' file"
        )
    return steps[-1][1]


# --------------------------------------------------------------------------- trees


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a/b/c": leaf}, t5x's slash-joined parameter names."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not _is_ts_spec(value):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": leaf} -> nested dict."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, last = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _is_ts_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "driver" in value and (
        "kvstore" in value or "path" in value
    )


# --------------------------------------------------------------------------- readers


class ParamReader:
    """The `target` parameters of one checkpoint: `.shapes` first, then `.read(name)`.

    Names are t5x's slash-joined paths relative to `target`
    (`encoder/layers_0/attention/query/kernel`).
    """

    def __init__(self, path: str | os.PathLike):
        self.step_dir = resolve_step_dir(path)
        if _is_orbax_tree(self.step_dir / STATE_ITEM):
            self._impl: _OrbaxParams | _MsgpackParams = _OrbaxParams(self.step_dir / STATE_ITEM)
        elif _is_orbax_tree(self.step_dir):
            self._impl = _OrbaxParams(self.step_dir)
        else:
            self._impl = _MsgpackParams(self.step_dir)
        self.format = self._impl.format

    @property
    def shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return self._impl.shapes

    def read(self, name: str) -> np.ndarray:
        if name not in self.shapes:
            raise KeyError(f"{self.step_dir}: no parameter {name!r} under target")
        return np.asarray(self._impl.read(name))

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.shapes:
            yield name, self.read(name)


class _OrbaxParams:
    """An Orbax PyTree checkpoint: metadata for shapes, a partial restore per tensor."""

    format = "orbax"

    def __init__(self, tree_dir: Path):
        import orbax.checkpoint as ocp  # heavy: import only when an Orbax tree is read

        self._ocp = ocp
        self._dir = tree_dir
        self._handler = ocp.PyTreeCheckpointHandler()
        tree = self._handler.metadata(tree_dir).tree
        if "target" not in tree:
            raise CheckpointFormatError(
                f"{tree_dir}: Orbax tree has no 'target' (keys: {sorted(tree)}); "
                "expected t5x's state dict"
            )
        self._meta = flatten(tree["target"])
        self.shapes = {
            name: (tuple(int(d) for d in meta.shape), np.dtype(meta.dtype))
            for name, meta in self._meta.items()
        }

    def read(self, name: str) -> np.ndarray:
        ocp = self._ocp
        item = unflatten({f"target/{name}": self._meta[name]})
        args = unflatten({f"target/{name}": ocp.RestoreArgs(restore_type=np.ndarray)})
        restored = self._handler.restore(
            self._dir, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True)
        )
        return flatten(restored)[f"target/{name}"]


class _MsgpackParams:
    """t5x's legacy layout: msgpack state dict whose big leaves are tensorstore specs."""

    format = "t5x-msgpack"

    def __init__(self, step_dir: Path):
        from flax import serialization  # decodes flax's ndarray ext types and chunked arrays

        self._dir = step_dir
        msgpack_path = step_dir / MSGPACK_FILE
        try:
            contents = serialization.msgpack_restore(msgpack_path.read_bytes())
        except Exception as err:  # a corrupt or foreign file: name it
            raise CheckpointFormatError(f"{msgpack_path}: not a t5x msgpack checkpoint ({err})") from err
        state = contents.get("optimizer", contents) if isinstance(contents, dict) else None
        if not isinstance(state, dict) or "target" not in state:
            raise CheckpointFormatError(
                f"{msgpack_path}: msgpack has no 'optimizer'/'target' state dict"
            )
        self._leaves = flatten(state["target"])
        self.shapes = {name: self._shape_of(name, leaf) for name, leaf in self._leaves.items()}

    def _shape_of(self, name: str, leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
        if _is_ts_spec(leaf):
            meta = leaf.get("metadata", {})
            if "shape" not in meta:
                return tuple(self._open(leaf).shape), np.dtype(leaf.get("dtype", "float32"))
            return tuple(int(d) for d in meta["shape"]), np.dtype(leaf.get("dtype", "float32"))
        array = np.asarray(leaf)
        return array.shape, array.dtype

    def _open(self, spec: Mapping[str, Any]):
        import tensorstore as ts

        return ts.open(_absolute_local_spec(spec, self._dir), open=True, read=True).result()

    def read(self, name: str) -> np.ndarray:
        leaf = self._leaves[name]
        if _is_ts_spec(leaf):
            return self._open(leaf).read().result()
        return np.asarray(leaf)


def _absolute_local_spec(spec: Mapping[str, Any], step_dir: Path) -> dict[str, Any]:
    """t5x records each array's folder name relative to the step folder (with a dummy bucket
    on GCS), either as `kvstore.path` (tensorstore >= 0.1.14) or as a top-level `path`
    (older). Point the spec at that folder under `step_dir` on the local file system."""
    spec = dict(spec)
    kvstore = spec.get("kvstore")
    kvstore = dict(kvstore) if isinstance(kvstore, Mapping) else {}
    relative = spec.pop("path", None) or kvstore.get("path")
    if not relative:
        raise CheckpointFormatError(f"{step_dir}: tensorstore spec without a path")
    spec["kvstore"] = {"driver": "file", "path": str(step_dir / Path(str(relative)).name)}
    return spec


# --------------------------------------------------------------------------- API


def read_params(path: str | os.PathLike) -> dict[str, Any]:
    """Nested numpy params tree (t5x names) of the checkpoint at `path` (a `checkpoint_<step>`
    folder or a MODEL_DIR: newest complete step). Used by export and by init-from-checkpoint."""
    reader = ParamReader(path)
    return unflatten(dict(reader))


@owner_only.private_umask()
def write_params_checkpoint(
    params: Mapping[str, Any], out_dir: str | os.PathLike, step: int = 0
) -> Path:
    """Write `params` as `out_dir/checkpoint_<step>/state/` in t5x's Orbax layout
    (`{"target": params, "state": {"step": step}}`, no optimizer state) and return the step
    folder. Orbax writes to a temporary folder and renames it, so an interrupted write never
    looks complete. Files are owner-only from creation: imported weights may be licensed."""
    import orbax.checkpoint as ocp

    out_dir = owner_only.make_dir(out_dir)
    if (out_dir / f"checkpoint_{step}").exists():
        raise FileExistsError(f"{out_dir / f'checkpoint_{step}'} already exists; choose an empty --out")
    tree = {
        "target": unflatten({k: np.asarray(v) for k, v in flatten(params).items()}),
        "state": {"step": np.asarray(step, np.int32)},
    }
    options = ocp.CheckpointManagerOptions(step_prefix="checkpoint", create=True)
    handlers = {STATE_ITEM: ocp.PyTreeCheckpointHandler(use_ocdbt=True)}
    with ocp.CheckpointManager(out_dir.resolve(), item_handlers=handlers, options=options) as manager:
        manager.save(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeSave(tree)}))
        manager.wait_until_finished()
    return out_dir / f"checkpoint_{step}"

