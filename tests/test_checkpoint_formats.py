"""Reading params from every t5x checkpoint layout, and writing our params-only layout.

The fixtures are written the way t5x writes them (t5x/checkpoints.py): its Orbax manager
(`checkpoint_<step>/state/`, OCDBT PyTree of `{"target", "state": {"step", "param_states"}}`,
commit marker) and its legacy msgpack `checkpoint` file whose array leaves are tensorstore
zarr specs relative to the step folder (`target.encoder.layers_0...`, gzip chunks).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization

from clinical_t5x.train import checkpoint_formats as cf
from clinical_t5x.hf import convert as hf

DIMS = hf.Dims(vocab_size=256, d_model=16, d_kv=4, d_ff=24, num_heads=2, num_layers=2,
               num_decoder_layers=1, num_buckets=32, gated=True, tied=False)


@pytest.fixture(scope="module")
def params() -> dict:
    return hf.random_params(DIMS, seed=1)


def _adafactor_like(params: dict) -> dict:
    """Factored second-moment slots as t5x's Adafactor keeps them (shapes only matter)."""
    return {name: {"v_row": np.zeros(a.shape[:-1], np.float32), "v_col": np.zeros(a.shape[-1:], np.float32)}
            for name, a in cf.flatten(params).items()}


def write_t5x_orbax(params: dict, model_dir: Path, step: int) -> Path:
    """What t5x's OrbaxCheckpointManagerInterface writes (state item, OCDBT, step prefix)."""
    tree = {"target": params,
            "state": {"step": np.int32(step), "param_states": cf.unflatten(_adafactor_like(params))}}
    options = ocp.CheckpointManagerOptions(step_prefix="checkpoint", create=True)
    handlers = {"state": ocp.PyTreeCheckpointHandler(use_ocdbt=True)}
    with ocp.CheckpointManager(model_dir, item_handlers=handlers, options=options) as manager:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(tree)))
        manager.wait_until_finished()
    return model_dir / f"checkpoint_{step}"


def write_t5x_msgpack(params: dict, model_dir: Path, step: int, inline: str = "",
                      old_spec: str = "") -> Path:
    """What t5x's legacy Checkpointer writes: zarr arrays under `target.<path>` folders and
    a msgpack `{"version": 3, "optimizer": state}` whose leaves are their specs. `inline`
    names a param kept as an array inside the msgpack (t5x does that for unpartitioned
    params); `old_spec` one written with tensorstore < 0.1.14's top-level `path`."""
    step_dir = model_dir / f"checkpoint_{step}"
    step_dir.mkdir(parents=True)

    def store(name: str, array: np.ndarray):
        if name == f"target/{inline}":
            return array
        rel = name.replace("/", ".")
        spec = {"driver": "zarr", "dtype": array.dtype.name, "kvstore": {"driver": "file", "path": rel},
                "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                             "chunks": list(array.shape)}}
        absolute = dict(spec, kvstore={"driver": "file", "path": str(step_dir / rel)})
        ts.open(absolute, create=True, open=True).result().write(array).result()
        recorded = ts.Spec(spec).to_json()
        if name == f"target/{old_spec}":
            recorded = dict(recorded, path=rel, kvstore={"driver": "file"})
        return recorded

    state = {"target": params, "state": {"step": np.int32(step),
                                         "param_states": cf.unflatten(_adafactor_like(params))}}
    flat = {name: store(name, np.asarray(a)) for name, a in cf.flatten(state).items()}
    contents = {"version": 3, "optimizer": cf.unflatten(flat)}
    (step_dir / "checkpoint").write_bytes(serialization.msgpack_serialize(contents))
    return step_dir


def assert_same(tree: dict, want: dict) -> None:
    got, exp = cf.flatten(tree), cf.flatten(want)
    assert got.keys() == exp.keys()
    for name in exp:
        np.testing.assert_array_equal(got[name], exp[name], err_msg=name)
        assert got[name].dtype == exp[name].dtype


def test_reads_t5x_orbax_layout(tmp_path, params):
    step_dir = write_t5x_orbax(params, tmp_path / "model", step=20)
    assert (step_dir / "state" / "_METADATA").is_file()
    reader = cf.ParamReader(step_dir)
    assert reader.format == "orbax"
    assert reader.shapes["encoder/relpos_bias/rel_embedding"] == ((2, 32), np.dtype("float32"))
    assert_same(cf.read_params(step_dir), params)


def test_reads_t5x_msgpack_tensorstore_layout(tmp_path, params):
    step_dir = write_t5x_msgpack(params, tmp_path / "model", 7, inline="encoder/encoder_norm/scale",
                                 old_spec="decoder/decoder_norm/scale")
    assert (step_dir / "target.encoder.layers_0.attention.query.kernel" / ".zarray").is_file()
    reader = cf.ParamReader(step_dir)
    assert reader.format == "t5x-msgpack"
    assert_same(cf.read_params(tmp_path / "model"), params)


def test_model_dir_picks_newest_complete_step(tmp_path, params):
    model_dir = tmp_path / "model"
    write_t5x_orbax(params, model_dir, step=10)
    newer = write_t5x_orbax(hf.random_params(DIMS, seed=2), model_dir, step=30)
    assert cf.resolve_step_dir(model_dir) == newer
    (newer / "commit_success.txt").unlink()  # as if killed before Orbax committed it
    (model_dir / "checkpoint_40.orbax-checkpoint-tmp-123").mkdir()
    assert cf.resolve_step_dir(model_dir) == model_dir / "checkpoint_10"
    assert_same(cf.read_params(model_dir), params)
    assert cf.resolve_step_dir(newer) == newer  # named explicitly: read anyway


def test_reads_our_trainer_checkpoints(tmp_path, params):
    """The trainer's Checkpointer writes the layout the exporter reads."""
    from clinical_t5x.train import checkpoints
    import flax.struct
    import jax
    import jax.numpy as jnp

    @flax.struct.dataclass
    class State:
        step: jnp.ndarray
        params: dict
        opt_state: dict

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    row_sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", None))
    sharded = cf.unflatten({  # as the trainer holds them: the embedding split over 8 devices
        name: jax.device_put(a, row_sharded) if name == "token_embedder/embedding" else jnp.asarray(a)
        for name, a in cf.flatten(params).items()})
    state = State(step=jnp.asarray(5, jnp.int32), params=sharded, opt_state=_adafactor_like(params))
    ckpt = checkpoints.Checkpointer(tmp_path / "model", use_async=False)
    ckpt.save(state, wait=True)
    ckpt.close()
    assert_same(cf.read_params(tmp_path / "model"), params)


def test_write_params_checkpoint_layout(tmp_path, params):
    step_dir = cf.write_params_checkpoint(params, tmp_path / "init")
    assert step_dir == tmp_path / "init" / "checkpoint_0"
    assert (step_dir / "state" / "_METADATA").is_file() and (step_dir / "commit_success.txt").is_file()
    assert_same(cf.read_params(tmp_path / "init"), params)
    for dirpath, _, files in os.walk(step_dir):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o600
    from clinical_t5x.train import checkpoints

    assert checkpoints.latest_step(tmp_path / "init") == 0
    with pytest.raises(FileExistsError, match="checkpoint_0"):
        cf.write_params_checkpoint(params, tmp_path / "init")


def test_not_a_checkpoint_names_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(cf.CheckpointFormatError, match="empty"):
        cf.read_params(tmp_path / "empty")
    (tmp_path / "bad" / "checkpoint_1").mkdir(parents=True)
    (tmp_path / "bad" / "checkpoint_1" / "checkpoint").write_bytes(b"not msgpack at all")
    with pytest.raises(cf.CheckpointFormatError, match="checkpoint_1"):
        cf.read_params(tmp_path / "bad")
