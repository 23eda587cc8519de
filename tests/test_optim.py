"""Adafactor with t5x defaults and the inverse-square-root schedule."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clinical_t5x.model import optim


def test_rsqrt_schedule_is_constant_during_warmup_then_decays():
    schedule = optim.rsqrt_schedule(base_learning_rate=1.0, warmup_steps=10000)
    values = [float(schedule(s)) for s in (0, 1, 9999, 10000, 40000, 1000000)]
    np.testing.assert_allclose(values, [0.01, 0.01, 0.01, 0.01, 0.005, 0.001], rtol=1e-6)
    assert float(optim.rsqrt_schedule(2.0, 40000)(0)) == pytest.approx(2.0 / 200)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.rsqrt_schedule(1.0, 0)


@pytest.mark.slow
def test_first_update_follows_adafactor_by_hand():
    # Step 0: decay 1 - 1**-0.8 = 0, so v = g^2 and the update is sign(g) (RMS 1: no
    # clipping), scaled by lr and max(RMS(param), 1e-3).
    opt = optim.make_optimizer(warmup_steps=100)
    params = {"scale": jnp.array([0.5, -2.0, 1.0]), "tiny": jnp.full((4,), 1e-5)}
    grads = {"scale": jnp.array([0.3, -0.1, 2.0]), "tiny": jnp.array([1.0, -1.0, 1.0, 1.0])}
    updates, state = opt.update(grads, opt.init(params), params)
    rms = float(jnp.sqrt(jnp.mean(params["scale"] ** 2)))
    np.testing.assert_allclose(updates["scale"], -0.1 * rms * jnp.sign(grads["scale"]),
                               rtol=1e-5)
    np.testing.assert_allclose(updates["tiny"], -0.1 * 1e-3 * jnp.sign(grads["tiny"]),
                               rtol=1e-5)
    assert float(optim.current_learning_rate(state)) == pytest.approx(0.1)


@pytest.mark.slow
def test_factoring_only_for_dims_of_at_least_128_and_matches_optax_adafactor():
    params = {"kernel": jnp.ones((256, 130)), "relpos": jnp.ones((8, 32))}
    grads = jax.tree_util.tree_map(
        lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    ours = optim.make_optimizer(warmup_steps=10)
    state = ours.init(params)
    factored = state.inner_state[0]
    assert factored.v_row["kernel"].shape == (130,) and factored.v_col["kernel"].shape == (256,)
    assert factored.v["relpos"].shape == (8, 32)
    reference = optax.adafactor(learning_rate=10 ** -0.5, decay_rate=0.8,
                                clipping_threshold=1.0, min_dim_size_to_factor=128,
                                multiply_by_parameter_scale=True, eps=1e-30)
    ref_state = reference.init(params)
    for _ in range(3):
        ours_up, state = ours.update(grads, state, params)
        ref_up, ref_state = reference.update(grads, ref_state, params)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
                               ours_up, ref_up)


def test_gin_configures_warmup():
    try:
        gin.parse_config("optim.make_optimizer.warmup_steps = 40000")
        state = optim.make_optimizer().init({"w": jnp.ones(3)})
        _, state = optim.make_optimizer().update({"w": jnp.ones(3)}, state, {"w": jnp.ones(3)})
        assert float(optim.current_learning_rate(state)) == pytest.approx(1 / 200)
    finally:
        gin.clear_config()


def test_constant_schedule_keeps_the_base_rate_at_every_step():
    opt = optim.make_optimizer(base_learning_rate=1e-4, warmup_steps=100, schedule="constant")
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update({"w": jnp.ones(3)}, state, params)
        assert float(optim.current_learning_rate(state)) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="schedule"):
        optim.make_optimizer(schedule="cosine")
