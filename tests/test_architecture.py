"""The model a checkpoint holds, from its shapes; the vocabulary check before fine-tuning."""
import functools

import jax
import pytest
from flax import linen as nn

from clinical_t5x.eval import architecture
from clinical_t5x.model import network
from clinical_t5x.train import checkpoint_formats


def shapes_of(config: network.T5Config) -> dict:
    boxed = jax.eval_shape(functools.partial(network.init_params, network.Transformer(config)),
                           jax.random.PRNGKey(0))
    flat = checkpoint_formats.flatten(nn.unbox(boxed))
    return {name: (tuple(leaf.shape), leaf.dtype) for name, leaf in flat.items()}


@pytest.mark.parametrize("flavour", [
    dict(mlp_activations=("gelu", "linear"), logits_via_embedding=False),  # T5 1.1
    dict(mlp_activations=("relu",), logits_via_embedding=True),  # T5 1.0
])
def test_config_fields_rebuild_the_config_that_made_the_tree(flavour):
    config = network.T5Config(vocab_size=384, emb_dim=48, num_heads=3, head_dim=8, mlp_dim=40,
                              num_encoder_layers=3, num_decoder_layers=2, **flavour)
    fields = architecture.config_fields(shapes_of(config))
    assert network.T5Config(dropout_rate=config.dropout_rate, **fields) == config
    assert "network.T5Config.num_heads = 3" in architecture.gin_bindings(fields)


class FakeVocabulary:
    vocab_size = 2115
    directory = "/vocab/t5"


def test_a_vocabulary_with_more_ids_than_embedding_rows_is_refused():
    architecture.check_vocabulary("/ckpt", 2176, FakeVocabulary())  # padded table: fine
    with pytest.raises(architecture.CheckpointMismatch,
                       match=r"/ckpt has 1024 embedding rows.*/vocab/t5 has 2115 ids"):
        architecture.check_vocabulary("/ckpt", 1024, FakeVocabulary())
