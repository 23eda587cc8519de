"""benchmarks/configs.py: each size name means one model, the same for both engines."""
import jax
import pytest

from clinical_t5x.model import network


@pytest.fixture
def configs(monkeypatch, request):
    monkeypatch.syspath_prepend(str(request.config.rootpath / "benchmarks"))
    import configs as module

    return module


def test_tiny_and_small_are_the_documented_shapes(configs):
    tiny, small = configs.SIZES["tiny"], configs.SIZES["small"]
    assert (tiny.emb_dim, tiny.num_heads, tiny.head_dim, tiny.mlp_dim, tiny.num_layers,
            tiny.vocab_size) == (256, 4, 64, 1024, 4, 8192)
    assert (tiny.batch_size, tiny.inputs_length, tiny.targets_length) == (16, 256, 64)
    # T5 1.1 small, as published.
    assert (small.emb_dim, small.num_heads, small.mlp_dim, small.num_layers) == (512, 6, 1024, 8)
    assert tiny.tokens_per_step == 16 * (256 + 64)


def test_builtin_and_hugging_face_models_have_the_same_parameters(configs):
    config = configs.t5_config("micro")
    params = jax.eval_shape(lambda: network.init_params(network.Transformer(config),
                                                        jax.random.PRNGKey(0)))
    ours = sum(x.size for x in jax.tree_util.tree_leaves(params))
    model = configs.hf_model("micro")
    theirs = sum(p.numel() for p in model.parameters())
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert config.num_encoder_layers == configs.SIZES["micro"].num_layers
    assert ours == theirs
