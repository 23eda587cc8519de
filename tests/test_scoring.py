"""The scorer: exact log-probabilities of the checkpoint's own model, whatever the batching and
padding, on a partitioned mesh; greedy decoding as network.greedy_decode."""

import jax
import numpy as np
import pytest
from flax import linen as nn

from clinical_t5x.audit.scoring import Scorer
from clinical_t5x.model import network
from clinical_t5x.model.partitioning import Partitioner
from clinical_t5x.train import checkpoint_formats

CONFIG = network.T5Config(vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                          num_encoder_layers=1, num_decoder_layers=1, mlp_activations=("gelu", "linear"),
                          dropout_rate=0.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    params = nn.unbox(network.init_params(network.Transformer(CONFIG), jax.random.PRNGKey(3)))
    root = tmp_path_factory.mktemp("ckpt")
    checkpoint_formats.write_params_checkpoint(jax.device_get(params), root)
    return root, jax.device_get(params)


def _rows(rng, count, low, high):
    return [rng.integers(3, 120, rng.integers(low, high)).tolist() + [1] for _ in range(count)]


def _direct(params, inputs, targets):
    model = network.Transformer(CONFIG)
    out = []
    for x, y in zip(inputs, targets):
        y = np.array([y])
        logits = model.apply({"params": params}, np.array([x]), np.pad(y, ((0, 0), (1, 0)))[:, :-1], y,
                             enable_dropout=False)
        log_p = jax.nn.log_softmax(logits[0], axis=-1)
        out.append(float(sum(log_p[i, t] for i, t in enumerate(y[0]))))
    return np.array(out)


@pytest.mark.heavy
def test_log_probs_match_the_model_for_any_batching(checkpoint):
    root, params = checkpoint
    rng = np.random.default_rng(0)
    inputs, targets = _rows(rng, 11, 3, 40), _rows(rng, 11, 1, 20)
    expected = _direct(params, inputs, targets)
    seen = []
    one = Scorer(root, batch_size=4).log_probs(inputs, targets, seen.append)
    np.testing.assert_allclose(one, expected, rtol=1e-5, atol=1e-4)
    assert sum(seen) == 11
    sharded = Scorer(root, batch_size=8, partitioner=Partitioner(num_partitions=2))
    assert sharded.partitioner.mesh.shape["data"] == 4
    np.testing.assert_allclose(sharded.log_probs(inputs, targets), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_greedy_decode_matches_network_greedy_decode(checkpoint):
    root, params = checkpoint
    rng = np.random.default_rng(1)
    inputs = _rows(rng, 5, 4, 20)
    got = Scorer(root, batch_size=2).greedy_decode(inputs, 6)
    for row, generated in zip(inputs, got):
        want = np.asarray(network.greedy_decode(network.Transformer(CONFIG), params, np.array([row]), 6))[0].tolist()
        assert generated == (want[:want.index(1)] if 1 in want else want)


def test_scorer_sizes_the_model_from_the_checkpoint(checkpoint):
    scorer = Scorer(checkpoint[0])
    assert scorer.config.emb_dim == 32 and scorer.vocab_size == 128
    assert scorer.config.mlp_activations == ("gelu", "linear") and not scorer.config.logits_via_embedding
