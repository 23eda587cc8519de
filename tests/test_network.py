"""The Flax T5: t5x's parameter tree, relative-position buckets, masking/packing, generation."""
import functools
import re

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from clinical_t5x.model import network

EMB, HEADS, HEAD_DIM, MLP, VOCAB = 32, 2, 16, 64, 128
KV = HEADS * HEAD_DIM
# Tiny models: XLA's optimisation passes cost more compile time than they save at run time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}



def tiny_config(**overrides) -> network.T5Config:
    fields = dict(vocab_size=VOCAB, emb_dim=EMB, num_heads=HEADS, head_dim=HEAD_DIM,
                  mlp_dim=MLP, num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0,
                  mlp_activations=("gelu", "linear"))
    return network.T5Config(**{**fields, **overrides})


def t5x_spec(layers: int, gated: bool, tied: bool) -> dict[str, tuple[tuple, tuple]]:
    """Parameter path -> (shape, logical axes), transcribed from t5x/examples/t5/network.py."""
    spec = {"token_embedder/embedding": ((VOCAB, EMB), ("vocab", "embed"))}
    mlp = ({"mlp/wi_0/kernel": ((EMB, MLP), ("embed", "mlp")),
            "mlp/wi_1/kernel": ((EMB, MLP), ("embed", "mlp"))} if gated
           else {"mlp/wi/kernel": ((EMB, MLP), ("embed", "mlp"))})
    mlp["mlp/wo/kernel"] = ((MLP, EMB), ("mlp", "embed"))
    norm = ((EMB,), ("embed",))

    def attention(name: str) -> dict:
        out = {f"{name}/{p}/kernel": ((EMB, KV), ("embed", "joined_kv"))
               for p in ("query", "key", "value")}
        out[f"{name}/out/kernel"] = ((KV, EMB), ("joined_kv", "embed"))
        return out

    for stack, norms, attns in (
            ("encoder", ("pre_attention_layer_norm", "pre_mlp_layer_norm"), ("attention",)),
            ("decoder", ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm",
                         "pre_mlp_layer_norm"), ("self_attention", "encoder_decoder_attention"))):
        spec[f"{stack}/relpos_bias/rel_embedding"] = ((HEADS, 32), ("heads", "relpos_buckets"))
        spec[f"{stack}/{stack}_norm/scale"] = norm
        for i in range(layers):
            prefix = f"{stack}/layers_{i}/"
            spec.update({prefix + f"{n}/scale": norm for n in norms})
            for a in attns:
                spec.update({prefix + k: v for k, v in attention(a).items()})
            spec.update({prefix + k: v for k, v in mlp.items()})
    if not tied:
        spec["decoder/logits_dense/kernel"] = ((EMB, VOCAB), ("embed", "vocab"))
    return spec


def flat_boxed(params) -> dict[str, nn.LogicallyPartitioned]:
    leaves = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    return {"/".join(k.key for k in path): leaf for path, leaf in leaves}


@pytest.mark.parametrize("flavour", ["1.0", "1.1"])
def test_parameter_tree_matches_t5x(flavour):
    t5_10 = flavour == "1.0"
    cfg = tiny_config(mlp_activations=("relu",) if t5_10 else ("gelu", "linear"),
                      logits_via_embedding=t5_10, num_encoder_layers=2, num_decoder_layers=2)
    boxed = flat_boxed(jax.eval_shape(
        functools.partial(network.init_params, network.Transformer(cfg)), jax.random.PRNGKey(0)))
    got = {k: (v.value.shape, tuple(v.names)) for k, v in boxed.items()}
    assert got == t5x_spec(2, gated=not t5_10, tied=t5_10)
    assert all(v.value.dtype == jnp.float32 for v in boxed.values())


def init(model: network.Transformer, seed: int = 0):
    init_fn = jax.jit(network.init_params, static_argnums=0, compiler_options=FAST_COMPILE)
    return nn.unbox(init_fn(model, jax.random.PRNGKey(seed)))


def jitted_apply(model: network.Transformer):
    return jax.jit(model.apply, static_argnames=("enable_dropout", "decode"),
                   compiler_options=FAST_COMPILE)


def test_initialisers_follow_t5x_including_folded_query_scaling():
    cfg = tiny_config(emb_dim=256, num_heads=4, head_dim=64)
    p = init(network.Transformer(cfg))
    attn = p["encoder"]["layers_0"]["attention"]
    np.testing.assert_allclose(np.std(attn["key"]["kernel"]), 256 ** -0.5, rtol=0.05)
    # t5x folds 1/sqrt(head_dim) into the query initialiser instead of scaling logits.
    np.testing.assert_allclose(np.std(attn["query"]["kernel"]), (256 * 64) ** -0.5, rtol=0.05)
    np.testing.assert_allclose(np.std(p["token_embedder"]["embedding"]), 1.0, rtol=0.05)
    assert np.all(p["encoder"]["encoder_norm"]["scale"] == 1.0)


def test_relative_position_buckets_hand_computed():
    bidi = network.relative_position_bucket(np.array([0, -1, 1, -7, 7, -8, -20, -127, -500, 500]),
                                            bidirectional=True)
    # 16 buckets per direction, 8 exact; memory before query -> low half, after -> high half.
    # |d|=8 -> 8 + floor(log(1)/log(16)*8)=8; |d|=20 -> 8 + floor(log(2.5)/log(16)*8)=10.
    assert bidi.tolist() == [0, 1, 17, 7, 23, 8, 10, 15, 15, 31]
    causal = network.relative_position_bucket(np.array([0, 5, -1, -15, -16, -20, -100, -500]),
                                              bidirectional=False)
    # Future keys collapse to 0; 16 exact; |d|=20 -> 16 + floor(log(1.25)/log(8)*16) = 17,
    # |d|=100 -> 16 + floor(log(6.25)/log(8)*16) = 30.
    assert causal.tolist() == [0, 0, 1, 15, 16, 17, 30, 31]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bias_gradient_is_the_lookups_scatter_add(bidirectional):
    """The bias's hand-written backward (a barrier, then a scatter-add) equals autodiff of a
    plain `table[:, buckets]` lookup, with the bias broadcast over a batch as in attention."""
    module = network.RelativePositionBiases(HEADS)
    params = module.init(jax.random.PRNGKey(0), 6, 5, bidirectional)
    buckets = network.relative_position_bucket(np.arange(5)[None, :] - np.arange(6)[:, None],
                                               bidirectional)
    cotangent = jax.random.normal(jax.random.PRNGKey(1), (3, HEADS, 6, 5))

    def loss(bias_of_table, table):
        return jnp.sum((bias_of_table(table) + 1.0) ** 2 * cotangent)

    def ours(table):
        return module.apply({"params": {"rel_embedding": table}}, 6, 5, bidirectional)

    def reference(table):
        return jnp.take(table, jnp.asarray(buckets), axis=1)[None]

    table = nn.unbox(params)["params"]["rel_embedding"]
    np.testing.assert_array_equal(ours(table), reference(table))
    got = jax.jit(jax.grad(functools.partial(loss, ours)))(table)
    want = jax.grad(functools.partial(loss, reference))(table)
    assert np.all(np.asarray(want)[:, np.unique(buckets)] != 0)  # not trivially zero
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features_in, features_out", [(EMB, MLP), (MLP, EMB)])
def test_project_backward_equals_autodiff_of_the_product(features_in, features_out):
    """`project`'s hand-laid-out backward (the kernel gradient over a transposed input, or
    transposed back from a product over the transposed gradient when the input is the wider)
    gives autodiff's gradients of `x @ kernel` for a [batch, length, in] input."""
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (3, 5, features_in))
    kernel = jax.random.normal(keys[1], (features_in, features_out))
    cotangent = jax.random.normal(keys[2], (3, 5, features_out))

    def loss(product, x, kernel):
        return jnp.sum(product(x, kernel) * cotangent)

    got = jax.jit(jax.grad(functools.partial(loss, network.project), argnums=(0, 1)))(x, kernel)
    want = jax.grad(functools.partial(loss, lambda a, b: a @ b), argnums=(0, 1))(x, kernel)
    np.testing.assert_allclose(network.project(x, kernel), x @ kernel, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


# Every product the network computes in the activation dtype, with operand shapes.
PRODUCTS = {"ble,ehd->bhld": ((2, 5, EMB), (EMB, HEADS, HEAD_DIM)),
            "bhqd,bhkd->bhqk": ((2, HEADS, 5, HEAD_DIM), (2, HEADS, 7, HEAD_DIM)),
            "bhqk,bhkd->bhqd": ((2, HEADS, 5, 7), (2, HEADS, 7, HEAD_DIM)),
            "bhqd,hde->bqe": ((2, HEADS, 5, HEAD_DIM), (HEADS, HEAD_DIM, EMB)),
            "td,tf->df": ((10, EMB), (10, MLP))}


def _bf16_operands(shapes, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    return [jax.random.normal(key, shape).astype(jnp.bfloat16) for key, shape in zip(keys, shapes)]


@pytest.mark.parametrize("spec", sorted(PRODUCTS))
def test_bf16_product_and_its_gradients_equal_the_float32_einsum(spec):
    """`network.product` of bfloat16 operands (on CPU: float32 results of re-laid-out operands,
    with a hand-written backward) gives the einsum of the same values and its gradients, to
    bfloat16 rounding of the result."""
    a, b = _bf16_operands(PRODUCTS[spec][:2])
    out = network.product(spec, a, b)
    cotangent = _bf16_operands([out.shape], seed=1)[0]

    def loss(product, a, b):
        return jnp.sum(product(spec, a, b).astype(jnp.float32) * cotangent.astype(jnp.float32))

    want = jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))
    assert out.dtype == jnp.bfloat16 and out.shape == want.shape
    np.testing.assert_allclose(out.astype(jnp.float32), want, rtol=1e-2, atol=1e-2)
    got = jax.jit(jax.grad(functools.partial(loss, network.product), argnums=(0, 1)))(a, b)
    wanted = jax.grad(functools.partial(loss, jnp.einsum), argnums=(0, 1))(
        a.astype(jnp.float32), b.astype(jnp.float32))
    for g, w, operand in zip(got, wanted, (a, b)):
        assert g.dtype == jnp.bfloat16 and g.shape == operand.shape
        np.testing.assert_allclose(g.astype(jnp.float32), w, rtol=2e-2, atol=2e-2)


def _dot_operand_types(hlo: str) -> list[str]:
    """The element types of every dot's operands in compiled HLO text, e.g. ["bf16,bf16"]."""
    types = []
    for computation in hlo.split("\n\n"):
        shapes = dict(re.findall(r"%(\S+) = (\w+)\[", computation))
        for lhs, rhs in re.findall(r" dot\(%([^,]+), %([^)]+)\)", computation):
            types.append(f"{shapes[lhs]},{shapes[rhs]}")
    return types


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA CPU's dot kernels")
@pytest.mark.parametrize("spec", sorted(PRODUCTS))
def test_bf16_products_stay_bf16_in_xla_cpu(spec):
    """Forward and backward, XLA CPU keeps every bf16 product's operands in bfloat16, which it
    only does for the layouts its fast dot kernels take; a plain einsum of the same spec has
    products it computes in float32 (the reason `product` exists)."""
    a, b = _bf16_operands(PRODUCTS[spec][:2])

    def compiled_dots(product):
        def loss(a, b):
            return jnp.sum(product(spec, a, b).astype(jnp.float32) ** 2)
        return _dot_operand_types(jax.jit(jax.grad(loss, argnums=(0, 1))).lower(a, b)
                                  .compile().as_text())

    dots = compiled_dots(network.product)
    assert len(dots) == 3 and set(dots) == {"bf16,bf16"}, dots
    if spec != "ble,ehd->bhld":  # its plain einsum happens to be laid out for the kernels
        assert "f32,f32" in compiled_dots(jnp.einsum)


def test_bf16_head_logits_are_float32_products_of_bf16_operands():
    """With bf16 activations the output head's logits are float32; on CPU they are the float32
    products of the bf16-rounded kernel (y is already bf16), as a TPU computes t5x's float32
    head at default precision, with gradients of the float32 head's to bf16 rounding, and
    every product of the head, forward and backward, stays bf16 in XLA CPU."""
    cfg = tiny_config(dtype="bfloat16")
    y = _bf16_operands([(2, 5, EMB)])[0]
    kernel = jax.random.normal(jax.random.PRNGKey(2), (EMB, VOCAB))
    cotangent = jax.random.normal(jax.random.PRNGKey(3), (2, 5, VOCAB))

    def loss(head, y, kernel):
        return jnp.sum(head(y, kernel) * cotangent)

    ours = lambda y, kernel: network.head_logits(y, kernel, cfg)  # noqa: E731
    rounded = lambda y, kernel: y.astype(jnp.float32) @ kernel.astype(  # noqa: E731
        jnp.bfloat16).astype(jnp.float32)
    logits = ours(y, kernel)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 5, VOCAB)
    want = rounded(y, kernel) if jax.default_backend() == "cpu" else y.astype(jnp.float32) @ kernel
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1)))(y, kernel)
    wanted = jax.grad(functools.partial(loss, rounded), argnums=(0, 1))(y, kernel)
    for g, w in zip(got, wanted):
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=2e-2, atol=5e-2)
    if jax.default_backend() == "cpu":
        hlo = jax.jit(jax.grad(functools.partial(loss, ours), argnums=(0, 1))).lower(
            y, kernel).compile().as_text()
        assert set(_dot_operand_types(hlo)) == {"bf16,bf16"}


@pytest.mark.parametrize("bias_shape", [(1, HEADS, 4, 5), (2, 1, 4, 5), (1, 1, 1, 5)])
def test_broadcast_gradients_equal_autodiff(bias_shape):
    """`add_bias` and `scale_features` (their broadcast gradients summed by `sum_leading`, a
    product with ones on CPU) give autodiff's gradients of the plain `+` and `*`."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    logits = jax.random.normal(keys[0], (2, HEADS, 4, 5))
    bias = jax.random.normal(keys[1], bias_shape)
    scale = jax.random.normal(keys[2], (5,))
    cotangent = jax.random.normal(keys[3], logits.shape)

    def loss(add, mul, logits, bias, scale):
        return jnp.sum(mul(add(logits, bias), scale) * cotangent)

    got = jax.jit(jax.grad(functools.partial(loss, network.add_bias, network.scale_features),
                           argnums=(0, 1, 2)))(logits, bias, scale)
    want = jax.grad(functools.partial(loss, jnp.add, jnp.multiply), argnums=(0, 1, 2))(
        logits, bias, scale)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    rows = jax.random.normal(keys[0], (7, 3, 5))
    np.testing.assert_allclose(network.sum_leading(rows, (3, 5)), rows.sum(0), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("with_keep", [False, True])
def test_attend_equals_softmax_then_values_with_its_gradients(with_keep):
    """`attend` (normalised after the value matmul) equals softmax(q.k + biases) @ v, in value
    and in its gradients to q, k, v and a bias, with a fully masked query row and dropout."""
    cfg = tiny_config()
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    q, k, v = (jax.random.normal(key, (2, HEADS, n, HEAD_DIM))
               for key, n in zip(keys[:3], (4, 5, 5)))
    relpos = jax.random.normal(keys[3], (1, HEADS, 4, 5))
    mask = jnp.ones((2, 4, 5), bool).at[0, :, 3:].set(False).at[1, 2, :].set(False)
    mask_bias = network._mask_bias(mask, jnp.float32)  # noqa: SLF001
    keep = (jax.random.bernoulli(keys[4], 0.7, (2, HEADS, 1, 5)) / 0.7) if with_keep else None
    cotangent = jax.random.normal(keys[5], (2, HEADS, 4, HEAD_DIM))

    def reference(q, k, v, relpos):
        weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) + relpos + mask_bias)
        if keep is not None:
            weights = weights * keep
        return jnp.einsum("bhqk,bhkd->bhqd", weights, v)

    def ours(q, k, v, relpos):
        return network.attend(q, k, v, (relpos, mask_bias), cfg, keep)

    np.testing.assert_allclose(ours(q, k, v, relpos), reference(q, k, v, relpos),
                               rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cotangent), argnums=(0, 1, 2, 3))(
        q, k, v, relpos) for f in (ours, reference)]
    for got, want in zip(*grads):
        assert np.any(np.asarray(want) != 0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def model_and_params():
    model = network.Transformer(tiny_config())
    return model, init(model, seed=1)


@pytest.mark.slow
def test_packed_segments_give_the_logits_of_the_separate_examples(model_and_params):
    model, params = model_and_params
    apply = jitted_apply(model)
    enc_a, tgt_a = [5, 6, 7, 1], [8, 9, 1]
    enc_b, tgt_b = [10, 11, 1], [12, 13, 14, 1]

    def shift(t):
        return [0] + t[:-1]

    def run(enc, dec_in, tgt, **packing):
        as_batch = lambda x: jnp.asarray([x], jnp.int32)  # noqa: E731
        return apply({"params": params}, as_batch(enc), as_batch(dec_in), as_batch(tgt),
                           **{k: as_batch(v) for k, v in packing.items()},
                           enable_dropout=False)[0]

    packed = run(enc_a + enc_b + [0], shift(tgt_a) + shift(tgt_b) + [0], tgt_a + tgt_b + [0],
                 encoder_segment_ids=[1] * 4 + [2] * 3 + [0],
                 decoder_segment_ids=[1] * 3 + [2] * 4 + [0],
                 encoder_positions=[0, 1, 2, 3, 0, 1, 2, 0],
                 decoder_positions=[0, 1, 2, 0, 1, 2, 3, 0])
    alone_a = run(enc_a, shift(tgt_a), tgt_a)
    alone_b = run(enc_b, shift(tgt_b), tgt_b)
    np.testing.assert_allclose(packed[:3], alone_a, atol=1e-5)
    np.testing.assert_allclose(packed[3:7], alone_b, atol=1e-5)


def test_padding_does_not_change_logits(model_and_params):
    model, params = model_and_params
    apply = jitted_apply(model)
    enc, dec_in, tgt = [[5, 6, 7, 1]], [[0, 8, 9]], [[8, 9, 1]]
    short = apply({"params": params}, jnp.array(enc), jnp.array(dec_in), jnp.array(tgt),
                        enable_dropout=False)
    padded = apply({"params": params}, jnp.array([enc[0] + [0, 0]]),
                         jnp.array([dec_in[0] + [0]]), jnp.array([tgt[0] + [0]]),
                         enable_dropout=False)
    np.testing.assert_allclose(padded[:, :3], short, atol=1e-5)


@pytest.mark.slow
def test_greedy_decode_is_consistent_with_teacher_forcing(model_and_params):
    model, params = model_and_params
    enc = jnp.array([[5, 6, 7, 1], [9, 3, 1, 0]], jnp.int32)
    tokens = network.greedy_decode(model, params, enc, 6)
    assert tokens.shape == (2, 6)
    dec_in = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]
    logits = jitted_apply(model)({"params": params}, enc, dec_in, jnp.ones_like(tokens),
                         enable_dropout=False)
    expected = np.asarray(jnp.argmax(logits, -1))
    for row, out in zip(expected, np.asarray(tokens)):
        stop = list(out).index(1) + 1 if 1 in out else len(out)
        assert out[:stop].tolist() == row[:stop].tolist()
        assert not out[stop:].any()  # padded with 0 after EOS, as Hugging Face


@pytest.mark.slow
def test_dropout_bf16_and_tied_head():
    cfg = tiny_config(dtype="bfloat16", dropout_rate=0.5, mlp_activations=("relu",),
                      logits_via_embedding=True)
    model = network.Transformer(cfg)
    params = init(model)
    apply = jitted_apply(model)
    args = (jnp.array([[5, 6, 7, 1]]), jnp.array([[0, 8, 9]]), jnp.array([[8, 9, 1]]))

    def run(seed, dropout=True):
        return apply({"params": params}, *args, enable_dropout=dropout,
                           rngs={"dropout": jax.random.PRNGKey(seed)})

    first = run(0)
    assert first.dtype == jnp.float32  # logits in float32 even with bf16 activations
    np.testing.assert_array_equal(first, run(0))
    assert not np.allclose(first, run(1))
    assert np.isfinite(np.asarray(run(0, dropout=False))).all()
    with pytest.raises(NotImplementedError, match="greedy_decode"):
        model.apply({"params": params}, *args, decode=True)


def test_t5config_gin_binding_static_and_dynamic_registration():
    try:
        gin.parse_config("network.T5Config.emb_dim = 768\n"
                         "network.T5Config.mlp_activations = ('gelu', 'linear')")
        assert network.T5Config().emb_dim == 768
        assert network.T5Config().mlp_activations == ("gelu", "linear")
        gin.clear_config()
        gin.parse_config("from __gin__ import dynamic_registration\n"
                         "from clinical_t5x.model import network\n"
                         "network.T5Config.num_heads = 12")
        assert network.T5Config().num_heads == 12
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_remat_recomputes_layers_with_the_same_parameters_and_gradients():
    """`remat=True` keeps t5x's parameter tree and the gradients (dropout on), and the backward
    pass really recomputes: the differentiated program holds one `remat` per layer."""
    args = (jnp.array([[5, 6, 7, 1, 0]]), jnp.array([[0, 8, 9]]), jnp.array([[8, 9, 1]]))

    def grads_and_program(remat: bool):
        model = network.Transformer(tiny_config(dropout_rate=0.3, remat=remat))
        params = init(model)

        def loss(p):
            logits = model.apply({"params": p}, *args, enable_dropout=True,
                                 rngs={"dropout": jax.random.PRNGKey(3)})
            return jnp.sum(jax.nn.log_softmax(logits)[..., 1])

        program = str(jax.make_jaxpr(jax.grad(loss))(params))
        return params, jax.jit(jax.grad(loss), compiler_options=FAST_COMPILE)(params), program

    params, grads, program = grads_and_program(False)
    remat_params, remat_grads, remat_program = grads_and_program(True)
    remats = [len(re.findall(r"\bremat\d*\[", p)) for p in (program, remat_program)]
    assert remats == [0, 2]  # one encoder and one decoder layer
    jax.tree_util.tree_map(np.testing.assert_array_equal, remat_params, params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           remat_grads, grads)
