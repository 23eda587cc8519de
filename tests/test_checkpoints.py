"""Checkpoints: t5x's Orbax layout, exact round trips (sharded), data position, robustness."""

import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from clu.data.dataset_iterator import TfDatasetIterator
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from clinical_t5x.train import checkpoints


@struct.dataclass
class State:
    """Stands in for steps.TrainState (same fields)."""
    step: jax.Array
    params: dict
    opt_state: tuple


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def _state(step: int, seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    mesh = _mesh()
    kernel = jax.device_put(rng.standard_normal((8, 6), dtype=np.float32),
                            NamedSharding(mesh, P(None, "model")))
    emb = jax.device_put(rng.standard_normal((16, 4), dtype=np.float32),
                         NamedSharding(mesh, P("model", None)))
    params = {"token_embedder": {"embedding": emb},
              "encoder": {"layers_0": {"mlp": {"wi": {"kernel": kernel}}}}}
    opt_state = (jax.tree.map(lambda x: x * 0.5, params), jnp.asarray(step, jnp.int32))
    return State(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)


def _assert_same(a: State, b: State) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert getattr(x, "sharding", None) == getattr(y, "sharding", None)


def test_t5x_layout_round_trip_sharded_and_owner_only(tmp_path):
    model_dir = tmp_path / "model"
    ckpt = checkpoints.Checkpointer(model_dir)
    state = _state(7)
    ckpt.save(state)
    ckpt.close()

    step_dir = model_dir / "checkpoint_7"
    assert (step_dir / "commit_success.txt").is_file() and (step_dir / "state").is_dir()
    assert checkpoints.latest_step(model_dir) == 7
    for path in [model_dir, step_dir, step_dir / "state"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    for root, dirs, files in os.walk(step_dir):  # every file Orbax wrote, whatever the umask
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o700, name
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600, name

    # The parameters sit under "target", optimizer state under state/param_states (t5x).
    from clinical_t5x.train import checkpoint_formats
    params = checkpoint_formats.read_params(step_dir)
    np.testing.assert_array_equal(params["token_embedder"]["embedding"],
                                  np.asarray(state.params["token_embedder"]["embedding"]))

    restored, step = checkpoints.Checkpointer(model_dir).restore(checkpoints.abstract_like(state))
    assert step == 7
    _assert_same(state, restored)


def test_half_written_checkpoints_are_skipped_not_fatal(tmp_path):
    model_dir = tmp_path / "model"
    ckpt = checkpoints.Checkpointer(model_dir, use_async=False)
    ckpt.save(_state(3))
    ckpt.close()
    # A kill during a save leaves Orbax's temporary folder; another copy lost its marker.
    (model_dir / "checkpoint_9.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
    (model_dir / "checkpoint_6" / "state").mkdir(parents=True)
    assert checkpoints.latest_step(model_dir) == 3

    ckpt = checkpoints.Checkpointer(model_dir, use_async=False)
    assert not (model_dir / "checkpoint_6").exists()  # moved aside, so step 6 can be saved
    assert any(p.name.startswith("incomplete-checkpoint_6") for p in model_dir.iterdir())
    restored, step = ckpt.restore(_state(0, seed=1))
    assert step == 3
    _assert_same(_state(3), restored)
    ckpt.save(_state(6))
    ckpt.close()
    assert checkpoints.complete_steps(model_dir) == [3, 6]


def test_damaged_newest_complete_checkpoint_stops_the_run_and_keep_n(tmp_path):
    """A read error on a complete checkpoint (commit marker present) is never a reason to
    fall back to an older step: the run would then fork from an older point."""
    model_dir = tmp_path / "model"
    ckpt = checkpoints.Checkpointer(model_dir, keep=2, use_async=False)
    for step in (1, 2, 3):
        ckpt.save(_state(step, seed=step))
    ckpt.close()
    assert checkpoints.complete_steps(model_dir) == [2, 3]
    for f in (model_dir / "checkpoint_3" / "state").rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"damaged")
    with pytest.raises(checkpoints.RestoreError, match="checkpoint_3") as caught:
        checkpoints.Checkpointer(model_dir).restore(_state(0))
    assert "checkpoint_2" not in str(caught.value)
    # The named older step still reads: nothing was moved or overwritten.
    restored, step = checkpoints.Checkpointer(model_dir).restore(_state(0), step=2)
    assert step == 2
    _assert_same(_state(2, seed=2), restored)


def test_no_checkpoint_restores_none(tmp_path):
    assert checkpoints.latest_step(tmp_path / "absent") is None
    assert checkpoints.Checkpointer(tmp_path / "m").restore(_state(0)) is None


def test_data_position_is_saved_per_host_and_restored_exactly(tmp_path):
    dataset = tf.data.Dataset.range(1000).shuffle(50, seed=3).map(lambda x: {"x": x}).batch(4)
    iterator = TfDatasetIterator(dataset, checkpoint=True)
    ckpt = checkpoints.Checkpointer(tmp_path / "m", data_iterator=iterator)
    for _ in range(5):
        next(iterator)
    ckpt.save(_state(5))  # asynchronous: the position must be taken before save returns
    expected = [next(iterator)["x"] for _ in range(3)]
    ckpt.close()
    assert (tmp_path / "m" / "checkpoint_5" / "dataset" / "train_ds-000-of-001.index").is_file()

    fresh = TfDatasetIterator(dataset, checkpoint=True)
    _, step = checkpoints.Checkpointer(tmp_path / "m", data_iterator=fresh).restore(_state(0))
    assert step == 5
    for want in expected:
        np.testing.assert_array_equal(next(fresh)["x"], want)


def test_async_save_survives_donation_of_the_saved_buffers(tmp_path):
    """The next train step donates the state while Orbax may still be writing it."""
    state = _state(4)
    expected = jax.tree.map(np.asarray, state)
    ckpt = checkpoints.Checkpointer(tmp_path / "m")
    ckpt.save(state)
    bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
    state = bump(state)
    ckpt.close()
    restored, _ = checkpoints.Checkpointer(tmp_path / "m").restore(state)
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(x, np.asarray(y))


def test_model_dir_urls_stay_urls_and_local_folders_become_absolute(tmp_path, monkeypatch):
    # pathlib would make gs://b/m the local folder ./gs:/b/m: checkpoints lost with the VM.
    assert os.fspath(checkpoints.model_path("gs://b/runs/m")) == "gs://b/runs/m"
    assert os.fspath(checkpoints.step_dir("gs://b/runs/m", 5)) == "gs://b/runs/m/checkpoint_5"
    monkeypatch.chdir(tmp_path)
    assert os.fspath(checkpoints.model_path("m")) == os.fspath(tmp_path / "m")
