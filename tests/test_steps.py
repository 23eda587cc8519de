"""Train/eval steps: sharded init, microbatch equivalence, sharded == unsharded, metrics."""
import jax
import numpy as np
import optax
import pytest

from clinical_t5x.model import network, optim, partitioning, steps

CONFIG = network.T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                          num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0,
                          mlp_activations=("gelu", "linear"))
MODEL = network.Transformer(CONFIG)
OPTIMIZER = optim.make_optimizer(warmup_steps=4)
RNG = jax.random.PRNGKey(0)
# Tiny models: XLA's optimisation passes cost more compile time than they save at run time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}



def make_batch(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(2, 128, (8, 12)).astype(np.int32)
    targets = rng.integers(2, 128, (8, 6)).astype(np.int32)
    inputs[:, -3:] = 0  # some padding
    targets[::2, -2:] = 0
    return {"encoder_input_tokens": inputs, "decoder_target_tokens": targets,
            "decoder_input_tokens": np.pad(targets, ((0, 0), (1, 0)))[:, :-1]}


# Plain SGD for the equivalence tests: its update is linear in the gradient, so parameters
# compare tightly. (Adafactor's first update is ~sign(g): float noise in near-zero gradients
# flips signs, which says nothing about the step.)
SGD = optax.sgd(0.1)


def train(partitioner, optimizer, num_microbatches=None, num_steps=2):
    state = steps.init_train_state(MODEL, optimizer, partitioner, None, jax.random.PRNGKey(42),
                                   compiler_options=FAST_COMPILE)
    step_fn = steps.make_train_step(MODEL, optimizer, partitioner, num_microbatches,
                                    compiler_options=FAST_COMPILE)
    batch = partitioning.global_batch_from_local(make_batch(), partitioner.data_sharding)
    history = []
    for _ in range(num_steps):
        state, metrics = step_fn(state, batch, RNG)
        history.append({k: float(v) for k, v in metrics.items()})
    return state, history, step_fn


@pytest.fixture(scope="module")
def single_device():
    return partitioning.Partitioner(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def adafactor_run(single_device):
    return train(single_device, OPTIMIZER, num_steps=3)


@pytest.fixture(scope="module")
def sgd_baseline(single_device):
    return train(single_device, SGD)[:2]


@pytest.mark.slow
def test_init_is_sharded_and_eval_matches_first_train_loss(adafactor_run):
    part = partitioning.Partitioner(num_partitions=2)
    state = steps.init_train_state(MODEL, OPTIMIZER, part, None, jax.random.PRNGKey(42),
                                   compiler_options=FAST_COMPILE)
    assert int(state.step) == 0
    query = state.params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert query.sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert {s.data.shape for s in query.addressable_shards} == {(32, 16)}
    batch = partitioning.global_batch_from_local(make_batch(), part.data_sharding)
    metrics = steps.make_eval_step(MODEL, part, compiler_options=FAST_COMPILE)(state.params,
                                                                             batch)
    assert float(metrics["loss"]) == pytest.approx(adafactor_run[1][0]["loss"], rel=1e-5)


def test_train_step_metrics_and_learning(adafactor_run):
    state, history, _ = adafactor_run
    assert int(state.step) == 3
    first = history[0]
    assert first["num_target_tokens"] == 8 * 6 - 4 * 2
    assert first["learning_rate"] == pytest.approx(0.5)  # 1/sqrt(max(0, 4))
    assert first["loss"] == pytest.approx(first["cross_ent_loss"] + first["z_loss"], rel=1e-6)
    assert first["loss_per_nonpadding_target_token"] == pytest.approx(first["loss"] / 40)
    assert 0.0 <= first["accuracy"] <= 1.0
    assert history[2]["loss"] < history[1]["loss"] < history[0]["loss"]


def assert_same_training(state, history, other_state, other_history):
    for ours, theirs in zip(history, other_history):
        for name in ("loss", "z_loss", "accuracy", "num_target_tokens"):
            assert ours[name] == pytest.approx(theirs[name], rel=1e-5), name
    # atol: sharding changes the float summation order of the gradients (seen: 1.07e-6).
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                atol=2e-6),
        state.params, other_state.params)


@pytest.mark.slow
def test_microbatched_update_equals_full_batch(single_device, sgd_baseline):
    state, history, _ = train(single_device, SGD, num_microbatches=4)
    assert_same_training(state, history, *sgd_baseline)


@pytest.mark.slow
@pytest.mark.parametrize("num_partitions", [2, 1, 4])  # meshes 4x2 (+ microbatches), 8x1, 2x4
def test_sharded_step_equals_unsharded(num_partitions, sgd_baseline):
    part = partitioning.Partitioner(num_partitions=num_partitions)
    microbatches = 2 if num_partitions == 2 else None
    state, history, _ = train(part, SGD, num_microbatches=microbatches)
    assert_same_training(state, history, *sgd_baseline)


def test_indivisible_microbatches_is_a_clear_error(single_device, sgd_baseline):
    step_fn = steps.make_train_step(MODEL, SGD, single_device, num_microbatches=3)
    with pytest.raises(ValueError, match="num_microbatches=3"):  # raised while tracing
        step_fn(sgd_baseline[0], make_batch(), RNG)


def chain_task_losses(dtype: str, num_steps: int = 200) -> np.ndarray:
    """Per-step training loss on a learnable task: each target token is a fixed function of
    the previous one (a chain from a random start), so the loss can fall well below uniform."""
    config = network.T5Config(**{**CONFIG.__dict__, "dtype": dtype})
    model = network.Transformer(config)
    optimizer = optim.make_optimizer(warmup_steps=100)
    partitioner = partitioning.Partitioner(devices=jax.devices()[:1])
    state = steps.init_train_state(model, optimizer, partitioner, None, jax.random.PRNGKey(7),
                                   compiler_options=FAST_COMPILE)
    step_fn = steps.make_train_step(model, optimizer, partitioner,
                                    compiler_options=FAST_COMPILE)
    rng = np.random.default_rng(3)
    losses = []
    for _ in range(num_steps):
        inputs = rng.integers(2, 128, (8, 12)).astype(np.int32)
        targets = np.empty((8, 6), np.int32)
        targets[:, 0] = inputs[:, 0]
        for i in range(1, 6):
            targets[:, i] = (targets[:, i - 1] * 7 + 3) % 126 + 2
        batch = {"encoder_input_tokens": inputs, "decoder_target_tokens": targets,
                 "decoder_input_tokens": np.pad(targets, ((0, 0), (1, 0)))[:, :-1]}
        state, metrics = step_fn(state, partitioning.global_batch_from_local(
            batch, partitioner.data_sharding), RNG)
        losses.append(metrics["loss_per_nonpadding_target_token"])
    return np.asarray(jax.device_get(losses), np.float64)


@pytest.mark.heavy
def test_bf16_and_fp32_training_curves_agree_over_200_steps():
    """bf16 activations (float32 parameters and loss) follow the float32 curve: every 20-step
    window's mean loss within 5% of float32's, and both learn the task (loss at least halved)."""
    fp32, bf16 = chain_task_losses("float32"), chain_task_losses("bfloat16")
    windows = lambda x: x.reshape(10, 20).mean(axis=1)  # noqa: E731
    assert np.all(np.isfinite(bf16))
    np.testing.assert_allclose(windows(bf16), windows(fp32), rtol=0.05)
    for curve in (fp32, bf16):
        assert windows(curve)[-1] < 0.5 * windows(curve)[0]
