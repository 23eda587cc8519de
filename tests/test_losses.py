"""Cross-entropy + z-loss, t5x's loss normalising factors, token accuracy."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clinical_t5x.model import losses

LOGITS = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 11)) * 3
TARGETS = jnp.array([[3, 5, 1, 0], [7, 1, 0, 0]])


def test_cross_entropy_and_z_loss_match_the_definitions():
    per_token, z_term = losses.cross_entropy_with_z_loss(LOGITS, TARGETS, z_loss=1e-4)
    ce = optax.softmax_cross_entropy_with_integer_labels(LOGITS, TARGETS)
    log_z = jax.nn.logsumexp(LOGITS, axis=-1)
    np.testing.assert_allclose(z_term, 1e-4 * log_z ** 2, rtol=1e-6)
    np.testing.assert_allclose(per_token, ce + 1e-4 * log_z ** 2, rtol=1e-5)


@pytest.mark.slow
def test_gradient_is_softmax_minus_onehot_plus_z_term():
    grad = jax.grad(lambda x: losses.cross_entropy_with_z_loss(x, TARGETS, 1e-4)[0].sum())(LOGITS)
    probs = jax.nn.softmax(LOGITS)
    log_z = jax.nn.logsumexp(LOGITS, axis=-1, keepdims=True)
    expected = (1 + 2e-4 * log_z) * probs - jax.nn.one_hot(TARGETS, 11)
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_argmax_hits_match_argmax_including_ties():
    tied = jnp.array([[1.0, 3.0, 3.0, 0.0], [3.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                      [-1.0, -2.0, -1.0, -5.0]])
    for target in range(4):
        targets = jnp.full((4,), target)
        np.testing.assert_array_equal(losses.argmax_hits(tied, targets),
                                      jnp.argmax(tied, -1) == targets)
    bf16 = LOGITS.astype(jnp.bfloat16)
    for targets in (TARGETS, jnp.argmax(LOGITS, -1), jnp.argmax(bf16, -1)):
        np.testing.assert_array_equal(losses.argmax_hits(LOGITS, targets),
                                      jnp.argmax(LOGITS, -1) == targets)
        np.testing.assert_array_equal(losses.argmax_hits(bf16, targets),
                                      jnp.argmax(bf16, -1) == targets)


def batch(**extra):
    return {"decoder_target_tokens": TARGETS, **extra}


def test_default_is_an_unnormalised_sum_over_real_target_tokens():
    factor, weights = losses.normalizer_and_weights(None, batch())
    assert factor is None
    np.testing.assert_array_equal(weights, [[1, 1, 1, 0], [1, 1, 0, 0]])
    sums = losses.loss_sums(LOGITS, TARGETS, weights, 0.0, factor)
    ce = optax.softmax_cross_entropy_with_integer_labels(LOGITS, TARGETS)
    np.testing.assert_allclose(sums.loss, jnp.sum(ce * weights), rtol=1e-6)
    assert float(sums.num_tokens) == 5 and float(sums.weight_sum) == 5


@pytest.mark.parametrize("name, expected", [("NUM_REAL_TARGET_TOKENS", 5.0),
                                            ("num_total_target_tokens", 8.0), (2.5, 2.5)])
def test_normalising_factors(name, expected):
    factor, weights = losses.normalizer_and_weights(name, batch())
    assert float(factor) == expected
    raw = losses.loss_sums(LOGITS, TARGETS, weights, 1e-4, None)
    normed = losses.loss_sums(LOGITS, TARGETS, weights, 1e-4, factor)
    np.testing.assert_allclose(normed.loss, raw.loss / expected, rtol=1e-6)
    np.testing.assert_allclose(normed.z_loss, raw.z_loss / expected, rtol=1e-6)


def test_average_per_sequence_weights_each_sequence_equally():
    factor, weights = losses.normalizer_and_weights("AVERAGE_PER_SEQUENCE", batch())
    np.testing.assert_allclose(weights, [[1 / 3] * 3 + [0], [0.5, 0.5, 0, 0]], rtol=1e-6)
    assert float(factor) == pytest.approx(2.0)
    packed = batch(decoder_segment_ids=jnp.array([[1, 1, 2, 0], [1, 2, 0, 0]]))
    _, weights = losses.normalizer_and_weights("AVERAGE_PER_SEQUENCE", packed)
    np.testing.assert_allclose(weights, [[0.5, 0.5, 1, 0], [1, 1, 0, 0]], rtol=1e-6)


def test_decoder_loss_weights_override_padding_and_accuracy_counts():
    weights_in = jnp.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    _, weights = losses.normalizer_and_weights(None, batch(decoder_loss_weights=weights_in))
    np.testing.assert_array_equal(weights, weights_in)
    sure = jax.nn.one_hot(TARGETS, 11) * 10.0
    sure = sure.at[0, 2].set(0.0).at[0, 2, 4].set(10.0)  # one weighted miss
    metrics = losses.metrics_from_sums(losses.loss_sums(sure, TARGETS, weights, 1e-4, None))
    assert float(metrics["num_target_tokens"]) == 4
    assert float(metrics["accuracy"]) == pytest.approx(0.75)
    np.testing.assert_allclose(metrics["cross_ent_loss"] + metrics["z_loss"], metrics["loss"])


def test_unknown_factor_is_a_clear_error():
    with pytest.raises(ValueError, match="loss_normalizing_factor"):
        losses.normalizer_and_weights("per_banana", batch())
