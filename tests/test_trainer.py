"""The built-in trainer: flags and gin, summaries, init from a checkpoint, non-finite stop,
SIGTERM, exact resume after kill -9, and (slow) two processes giving the losses of one, all
on a very small model."""

import glob
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gin
import numpy as np
import pytest
import tensorflow as tf

from clinical_t5x.train import checkpoint_formats, checkpoints, preemption, trainer as train
from test_owner_only import assert_owner_only

STEPS = 10
# A very small model and batch so that each trainer process spends its time starting, not
# training; `data_shards=2` fixes the data layout so one process and two read the same batches.
SMALL = [
    "--gin_file=gin/builtin/tiny.gin",
    "--gin.BATCH_SIZE=4",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
    f"--gin.TRAIN_STEPS={STEPS}",
    "--gin.EVAL_PERIOD=0",
    "--gin.CHECKPOINT_PERIOD=1",
    "--gin.train.log_period=1",
    "--gin.train.data_shards=2",
    "--gin.network.T5Config.emb_dim=32",
    "--gin.network.T5Config.num_heads=2",
    "--gin.network.T5Config.head_dim=16",
    "--gin.network.T5Config.mlp_dim=64",
    "--gin.network.T5Config.num_encoder_layers=1",
    "--gin.network.T5Config.num_decoder_layers=1",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return os.environ.get("CLINICAL_T5X_CACHE") or str(tmp_path_factory.mktemp("cache"))


def _env(cache_dir: str, devices: int = 2, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CLINICAL_T5X_CACHE": cache_dir, "CLINICAL_T5X_NO_REEXEC": "1",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.update(extra)
    return env


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_trainer_outlives_its_test():
    """A failed test must not leave trainers running (some train for 100,000 steps)."""
    yield
    for proc in _STARTED:
        if proc.poll() is None and not getattr(proc, "module_scoped", False):
            proc.kill()
            proc.wait()


def _start(model_dir: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    log = model_dir.parent / f"{model_dir.name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clinical_t5x.train", *SMALL,
             f"--gin.MODEL_DIR='{model_dir}'", *extra],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    _STARTED.append(proc)
    return proc


def _fail(proc: subprocess.Popen, why: str) -> None:
    pytest.fail(f"{why}:\n{proc.log.read_text(errors='replace')[-3000:]}")


def _wait(proc: subprocess.Popen, timeout: float = 240) -> int:
    rc = proc.wait(timeout=timeout)
    if rc not in (0, train.EXIT_PREEMPTED):
        _fail(proc, f"trainer exited {rc}")
    return rc


def _after_checkpoint(proc: subprocess.Popen, model_dir: Path, step: int, sig: int,
                      timeout: float = 240) -> None:
    """Sends `sig` as soon as a checkpoint at or past `step` is complete."""
    deadline = time.monotonic() + timeout
    while (checkpoints.latest_step(model_dir) or 0) < step:
        if proc.poll() is not None:
            _fail(proc, "trainer ended before it was interrupted")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)


def _losses(model_dir: Path) -> dict[int, float]:
    """step -> train loss from the TensorBoard events; later event files win."""
    out = {}
    for path in sorted(glob.glob(str(model_dir / "train" / "events.out.tfevents.*")),
                       key=os.path.getmtime):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted run, started in the background while a test starts its own."""
    model_dir = tmp_path_factory.mktemp("reference") / "model"
    proc = _start(model_dir, _env(cache_dir))
    proc.module_scoped = True

    def losses() -> dict[int, float]:
        _wait(proc)
        return _losses(model_dir)

    yield losses
    proc.kill()


@pytest.mark.heavy
def test_kill9_then_resume_gives_the_uninterrupted_losses_exactly(tmp_path, cache_dir,
                                                                 reference):
    model_dir, env = tmp_path / "model", _env(cache_dir)
    umask = os.umask(0o022)  # a usual umask: owner-only must not depend on the caller's
    try:
        victim = _start(model_dir, env)
    finally:
        os.umask(umask)
    _after_checkpoint(victim, model_dir, 3, signal.SIGKILL)
    victim.wait()
    killed_at = checkpoints.latest_step(model_dir)
    assert killed_at < STEPS
    assert_owner_only(model_dir)  # checkpoints, event files, whatever was in flight

    assert _wait(_start(model_dir, env)) == 0
    assert checkpoints.latest_step(model_dir) == STEPS
    expected, resumed = reference(), _losses(model_dir)
    assert sorted(expected) == list(range(1, STEPS + 1))
    for step in range(killed_at + 1, STEPS + 1):
        assert resumed[step] == expected[step], f"step {step}"  # exact, not approximate
    assert len(set(expected.values())) > 1


def _free_port(low: int = 1024, high: int = 65535) -> int:
    """A port nothing listens on, in [low, high]."""
    for port in np.random.default_rng().permutation(np.arange(low, high + 1)).tolist():
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


def _explicit_env(process: int, port: int) -> dict[str, str]:
    return {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(process)}


def _slurm_env(process: int, port: int) -> dict[str, str]:
    """What srun gives each task of a 2-task step on one node (launch/slurm.sh); JAX's Slurm
    detection derives the coordinator port from the job id: 61440 + id % 4096."""
    return {"SLURM_JOB_ID": str(port - 61440 + 4096 * 7),
            "SLURM_JOB_NODELIST": "localhost", "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NTASKS": "2", "SLURM_PROCID": str(process), "SLURM_LOCALID": str(process),
            "SLURM_NODEID": "0"}


def _two_processes(model_dir: Path, cache_dir: str, *extra: str,
                   launcher=_explicit_env) -> list[subprocess.Popen]:
    port = _free_port(61440)  # in the range JAX's Slurm detection picks from
    return [
        _start(model_dir, _env(cache_dir, devices=1, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                               **launcher(i, port)), *extra)
        for i in range(2)
    ]


@pytest.mark.heavy
@pytest.mark.parametrize("launcher", [pytest.param(_explicit_env, id="explicit"),
                                      pytest.param(_slurm_env, id="slurm")])
def test_two_processes_give_the_losses_of_one(tmp_path, cache_dir, reference, launcher):
    model_dir = tmp_path / "model"
    procs = _two_processes(model_dir, cache_dir, "--gin.CHECKPOINT_PERIOD=5", launcher=launcher)
    for proc in procs:
        assert _wait(proc, timeout=900) == 0  # three trainers start slowly on a busy machine
    both = _losses(model_dir)
    expected = reference()
    # Same mesh (2 data shards) and same global batches: the losses agree to the last bit.
    assert [both[s] for s in range(1, STEPS + 1)] == [expected[s] for s in range(1, STEPS + 1)]
    dataset_dir = model_dir / f"checkpoint_{STEPS}" / "dataset"
    assert sorted(p.name for p in dataset_dir.glob("*.index")) == [
        "train_ds-000-of-002.index", "train_ds-001-of-002.index"]


@pytest.mark.heavy
def test_sigterm_to_one_of_two_processes_stops_both_at_one_checkpointed_step(tmp_path,
                                                                            cache_dir):
    model_dir = tmp_path / "model"
    procs = _two_processes(model_dir, cache_dir, "--gin.TRAIN_STEPS=100000",
                           "--gin.CHECKPOINT_PERIOD=2", "--gin.train.log_period=100000",
                           "--gin.train.stop_check_period=3")
    _after_checkpoint(procs[1], model_dir, 2, signal.SIGTERM, timeout=900)  # the second host only
    assert [_wait(proc, timeout=900) for proc in procs] == [train.EXIT_PREEMPTED] * 2
    stopped = checkpoints.latest_step(model_dir)
    assert stopped % 3 == 0  # an agreed step, the same for both (one complete checkpoint)
    dataset_dir = model_dir / f"checkpoint_{stopped}" / "dataset"
    assert len(list(dataset_dir.glob("*.index"))) == 2
    log = procs[0].log.read_text(errors="replace")
    assert "stopped at step" in log


# ----------------------------------------------------------------------------- in process


@pytest.fixture
def gin_config(cache_dir, monkeypatch):
    monkeypatch.setenv("CLINICAL_T5X_CACHE", cache_dir)
    gin.clear_config()
    yield
    gin.clear_config()


def _configure(model_dir: Path, *extra: str) -> None:
    args = train.parse_flags([*SMALL, f"--gin.MODEL_DIR='{model_dir}'", "--gin.BATCH_SIZE=8",
                              *extra])
    train.configure_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)


def _source_checkpoint(directory: Path, known_rows: int) -> tuple[Path, dict]:
    """Parameters of the SMALL model whose vocabulary stops before the DEID tags."""
    import jax

    from flax import linen as nn

    from clinical_t5x.train import checkpoint_formats

    from clinical_t5x.model import network

    config = network.T5Config(vocab_size=2176, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                              num_encoder_layers=1, num_decoder_layers=1,
                              mlp_activations=("gelu", "linear"))
    params = jax.tree.map(np.asarray, nn.unbox(
        network.init_params(network.Transformer(config), jax.random.PRNGKey(7))))
    params["token_embedder"]["embedding"] = params["token_embedder"]["embedding"][:known_rows]
    params["decoder"]["logits_dense"]["kernel"] = \
        params["decoder"]["logits_dense"]["kernel"][:, :known_rows]
    checkpoint_formats.write_params_checkpoint(params, directory)
    return directory / "checkpoint_0", params


@pytest.mark.heavy
def test_in_process_run_from_an_init_checkpoint_writes_t5x_summaries(tmp_path, gin_config,
                                                                     capsys, caplog):
    """One short run checks init-from-checkpoint (tag rows from word pieces), keep-N, the
    summaries and the console line."""
    from clinical_t5x.train import checkpoint_formats, init_from

    model_dir = tmp_path / "model"
    _configure(model_dir)
    vocabulary = train.task_vocabulary("synthetic_span_corruption")
    known_rows = vocabulary.tag_ids["[Name]"]  # pieces + sentinels: what the source knows
    init_dir, source = _source_checkpoint(tmp_path / "init", known_rows)
    gin.clear_config()
    _configure(model_dir, "--gin.TRAIN_STEPS=4", "--gin.EVAL_PERIOD=2",
               "--gin.train.eval_steps=2", "--gin.train.log_period=2",
               "--gin.CHECKPOINT_PERIOD=2", "--gin.train.keep_checkpoints=1",
               f"--gin.INIT_CHECKPOINT='{init_dir}'", "--gin.LEARNING_RATE=1e-12")
    with caplog.at_level("INFO"):
        result = train.train()
    assert result.exit_code == 0 and result.step == 4
    assert f"rows [{known_rows}, {known_rows + 1}," in caplog.text and "word pieces" in caplog.text
    trained = checkpoint_formats.read_params(model_dir)
    embedding = trained["token_embedder"]["embedding"]
    np.testing.assert_allclose(embedding[:known_rows], source["token_embedder"]["embedding"],
                               rtol=1e-5, atol=1e-6)  # learning rate ~0: still the source
    name_pieces = vocabulary.encode("name")
    np.testing.assert_allclose(embedding[known_rows],  # [Name], the first tag
                               source["token_embedder"]["embedding"][name_pieces].mean(0),
                               rtol=1e-5, atol=1e-6)
    assert init_from.TAG_WORDS["[Name]"] == "name"
    assert set(result.eval_metrics) >= {"loss", "accuracy", "cross_ent_loss", "z_loss"}
    assert checkpoints.complete_steps(model_dir) == [4]  # keep-N
    line = [l for l in capsys.readouterr().err.splitlines() if l.startswith("step 4/4")][0]
    for part in ("loss/token", "lr", "tok/s", "MFU", "ETA"):
        assert part in line

    def tags(folder: Path) -> set[str]:
        return {v.tag for f in folder.glob("events.out.tfevents.*")
                for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}

    assert tags(model_dir / "train") >= {"loss", "accuracy", "cross_ent_loss", "z_loss",
                                         "learning_rate", "timing/steps_per_second"}
    assert tags(model_dir / "training_eval" / "synthetic_span_corruption") >= {"loss", "accuracy"}


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, gin_config):
    model_dir = tmp_path / "model"
    _configure(model_dir, "--gin.LEARNING_RATE=1e30", "--gin.CHECKPOINT_PERIOD=1")
    result = train.train()
    assert result.exit_code == train.EXIT_NONFINITE
    assert result.step < STEPS
    good = checkpoints.latest_step(model_dir)
    # Step 1's loss is computed before any update, so step 1 was saved; the bad step was not.
    assert good is not None and 1 <= good < result.step
    params = checkpoint_formats.read_params(checkpoints.step_dir(model_dir, good))
    assert all(np.isfinite(leaf).all() for leaf in _leaves(params))


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield np.asarray(tree)


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_stops(tmp_path, gin_config):
    model_dir = tmp_path / "model"
    _configure(model_dir, "--gin.TRAIN_STEPS=1000", "--gin.CHECKPOINT_PERIOD=1000")
    flag = preemption.StopFlag()
    previous = signal.signal(signal.SIGTERM, flag)

    def terminate_once_training():
        while not list((model_dir / "train").glob("events.out.tfevents.*")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_training, daemon=True)
    killer.start()
    try:
        result = train.train(stop_flag=flag)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == train.EXIT_PREEMPTED
    assert 0 < result.step < 1000
    assert checkpoints.latest_step(model_dir) == result.step  # written before exiting


def test_flags_follow_t5x():
    args = train.parse_flags(["--gin_file=a.gin", "--gin_file", "b.gin",
                              "--gin.MODEL_DIR='/x'", "--gin_bindings=TRAIN_STEPS=3",
                              "--gin_search_paths=/p,/q"])
    assert args.gin_file == ["a.gin", "b.gin"]
    assert args.gin_bindings == ["MODEL_DIR='/x'", "TRAIN_STEPS=3"]
    assert args.gin_search_paths == ["/p,/q"]
    assert any(Path(p, "gin", "builtin", "tiny.gin").is_file() for p in train.default_gin_search_paths())
    with pytest.raises(SystemExit):
        train.parse_flags([])


@pytest.mark.parametrize("variant", ["tiny", "base", "sci", "scratch", "large"])
def test_every_builtin_variant_parses_with_the_paper_settings(variant, gin_config):
    bindings = ["MODEL_DIR='/m'"] + (["INIT_CHECKPOINT='/i'"] if variant in ("base", "sci")
                                     else [])
    train.configure_gin([f"gin/builtin/{variant}.gin"], bindings, [])
    macro = lambda name: gin.query_parameter(f"%{name}")  # noqa: E731
    lengths = macro("TASK_FEATURE_LENGTHS")
    if variant == "tiny":
        assert macro("MIXTURE_OR_TASK_NAME") == "synthetic_span_corruption"
        return
    assert lengths == {"inputs": 512, "targets": 114}
    assert macro("WARMUP_STEPS") == 40000 and macro("DROPOUT_RATE") == 0.0
    assert macro("MIXTURE_OR_TASK_NAME") == "mimic_span_corruption"
    assert macro("BATCH_SIZE") == (96 if variant == "large" else 256)
    assert macro("VOCABULARY") == {"base": "t5", "sci": "t5", "scratch": "mimic_lower",
                                   "large": "mimic_cased"}[variant]
    assert gin.query_parameter("network.T5Config.emb_dim") == (1024 if variant == "large"
                                                               else 768)
    if variant == "large":
        assert macro("TRAIN_STEPS") == 780000
