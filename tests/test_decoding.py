"""Cached greedy decoding: the uncached reference's tokens, exact log-probability scores."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from clinical_t5x.model import decoding, network

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
LENGTH = 12
# Rows of different lengths (encoder padding must be masked the same way).
ENCODER_INPUTS = jnp.array([[5, 6, 7, 8, 9, 1], [9, 3, 1, 0, 0, 0], [17, 1, 0, 0, 0, 0]],
                           jnp.int32)


def tiny_model(**overrides) -> network.Transformer:
    fields = dict(vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                  num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
                  mlp_activations=("gelu", "linear"))
    return network.Transformer(network.T5Config(**{**fields, **overrides}))


def init(model: network.Transformer, seed: int):
    init_fn = jax.jit(network.init_params, static_argnums=0, compiler_options=FAST_COMPILE)
    return nn.unbox(init_fn(model, jax.random.PRNGKey(seed)))


def reference_tokens(model, params, eos_id: int) -> np.ndarray:
    """The uncached `network.greedy_decode`, compiled without XLA's costly passes."""
    compiled = network.greedy_decode.lower(model, params, ENCODER_INPUTS, LENGTH,
                                           eos_id=eos_id).compile(FAST_COMPILE)
    return np.asarray(compiled(params, ENCODER_INPUTS))


def generate(model, params, eos_id: int) -> decoding.Decoded:
    return decoding.greedy_decode(model, params, ENCODER_INPUTS, LENGTH, eos_id=eos_id)


def tied_relu_params(model: network.Transformer, seed: int):
    """T5 1.0 (tied head, relu) at init repeats the previous token (unit-scale embeddings
    dominate the tied logits); smaller embeddings make it emit varied tokens."""
    params = init(model, seed)
    params["token_embedder"]["embedding"] = params["token_embedder"]["embedding"] * 0.05
    params["decoder"]["decoder_norm"]["scale"] = params["decoder"]["decoder_norm"]["scale"] * 20
    return params


@pytest.fixture(scope="module")
def t5_11():
    model = tiny_model()
    params = init(model, seed=4)
    reference = reference_tokens(model, params, eos_id=-1)
    return model, params, reference


def assert_varied(tokens: np.ndarray) -> None:
    """Rows differ and vary along their length: a wrong cache slot would change them."""
    assert len({tuple(r) for r in tokens}) == len(tokens)
    assert len(set(tokens.ravel().tolist())) >= 6


def test_cached_tokens_equal_the_uncached_reference(t5_11):
    model, params, reference = t5_11
    cached = generate(model, params, eos_id=-1)
    assert cached.tokens.shape == (3, LENGTH)
    np.testing.assert_array_equal(np.asarray(cached.tokens), reference)
    assert_varied(reference)


@pytest.mark.slow
def test_cached_tokens_equal_the_reference_with_a_tied_head():
    model = tiny_model(mlp_activations=("relu",), logits_via_embedding=True)
    params = tied_relu_params(model, seed=3)
    reference = reference_tokens(model, params, eos_id=-1)
    cached = generate(model, params, eos_id=-1)
    np.testing.assert_array_equal(np.asarray(cached.tokens), reference)
    assert_varied(reference)


@pytest.mark.slow
def test_rows_stop_at_eos_and_scores_are_teacher_forced_log_probabilities(t5_11):
    model, params, free = t5_11
    eos = int(free[0, 4])  # a token the first row emits mid-way: make it the EOS id
    out = generate(model, params, eos_id=eos)
    tokens = np.asarray(out.tokens)
    for row, free_row in zip(tokens, free):
        stop = list(free_row).index(eos) + 1 if eos in free_row else LENGTH
        assert row[:stop].tolist() == free_row[:stop].tolist()
        assert not row[stop:].any()  # padded with 0 after EOS, as the reference
    assert 0 < list(tokens[0]).index(eos) <= 4
    dec_in = jnp.pad(out.tokens, ((0, 0), (1, 0)))[:, :-1]
    logits = jax.jit(model.apply, static_argnames="enable_dropout",
                     compiler_options=FAST_COMPILE)(
        {"params": params}, ENCODER_INPUTS, dec_in, jnp.ones_like(out.tokens),
        enable_dropout=False)
    logprobs = np.asarray(jax.nn.log_softmax(logits))
    for row, tok in enumerate(tokens):
        stop = list(tok).index(eos) + 1 if eos in tok else LENGTH
        expected = sum(logprobs[row, i, tok[i]] for i in range(stop))
        np.testing.assert_allclose(float(out.scores[row]), expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out.scores) < 0)
