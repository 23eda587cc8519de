"""T5 encoder-decoder in Flax with t5x's parameter tree, so one exporter serves both trainers.

Parameter names, shapes, initialisers and the query-scaling convention follow t5x's reference
network (`t5x/examples/t5/network.py`): the 1/sqrt(head_dim) attention scaling is folded into the
query kernel's initialiser and never applied at run time, which keeps t5x checkpoints and
converted Hugging Face weights exact. Layers are a Python loop (unrolled), attention is einsum:
both measured faster than `nn.scan` / `dot_product_attention` on CPU (docs/performance.md).
Every parameter and the main activations carry t5x's logical axis names for partitioning.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import operator
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
Initializer = Callable[..., Array]

NUM_RELPOS_BUCKETS = 32
RELPOS_MAX_DISTANCE = 128
# Additive bias for masked attention logits, as t5x (finite so fully masked rows stay finite).
MASKED_LOGIT = -1e10


@gin.configurable(module="network")
@dataclasses.dataclass(frozen=True)
class T5Config:
    """Model hyperparameters with t5x's field names (gin: `network.T5Config.emb_dim = 768`)."""

    vocab_size: int = 32128
    dtype: Any = "float32"  # activation dtype; parameters are always float32
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_activations: Sequence[str] = ("relu",)
    dropout_rate: float = 0.1
    logits_via_embedding: bool = False
    float32_attention_logits: bool = False
    # Activation rematerialisation: each layer keeps only its input for the backward pass and
    # recomputes the rest (about a third more FLOPs for far less activation memory).
    remat: bool = False

    def __post_init__(self) -> None:
        # Gin may hand over a list; a tuple keeps the config hashable (Flax module attribute).
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        jnp.dtype(self.dtype)  # fail early on an unknown dtype name

    @property
    def activation_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


def _param(module: nn.Module, name: str, init: Initializer, shape: tuple[int, ...],
           axes: tuple[str, ...]) -> Array:
    """A float32 parameter annotated with logical axis names."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def _constrain(x: Array, axes: tuple[str, ...]) -> Array:
    return nn.with_logical_constraint(x, axes)


_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
_attention_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


class Dense(nn.Module):
    """Bias-free projection of the last axis (t5x's DenseGeneral with a 2-D kernel)."""

    features: int
    kernel_axes: tuple[str, str]
    dtype: Any = jnp.float32
    kernel_init: Initializer = _kernel_init

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = _param(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                        self.kernel_axes)
        return project(x.astype(self.dtype), kernel.astype(self.dtype))


def _bf16_cpu_einsum(spec: str, a: Array, b: Array, result_dtype: Any = None) -> Array:
    """A bfloat16 einsum as XLA CPU's fast bf16 dot kernels (YNNPACK, AMX where the CPU has it)
    take it: float32 results, rounded afterwards, and both operands and the result laid out
    row-major as [batch.., m.., k..] x [batch.., k.., n..] -> [batch.., m.., n..]. Any other
    dot XLA computes in float32, 5-8 times slower than the fast kernels on two Xeon cores
    with AMX (docs/performance.md). Every index of `spec` must appear in two of its three
    terms (no index summed within one operand). The result is rounded to `result_dtype`
    (default: the operands' dtype)."""
    a_axes, b_axes, out = _spec_terms(spec)
    batch = [i for i in out if i in a_axes and i in b_axes]
    m = [i for i in out if i in a_axes and i not in b_axes]
    n = [i for i in out if i in b_axes and i not in a_axes]
    k = [i for i in a_axes if i in b_axes and i not in out]
    lhs = _row_major_transpose(a, [a_axes.index(i) for i in batch + m + k])
    rhs = _row_major_transpose(b, [b_axes.index(i) for i in batch + k + n])
    nb, nk = len(batch), len(k)
    dims = ((tuple(range(nb + len(m), lhs.ndim)), tuple(range(nb, nb + nk))),
            (tuple(range(nb)), tuple(range(nb))))
    product_ = jax.lax.dot_general(lhs, rhs, dims, preferred_element_type=jnp.float32)
    natural = batch + m + n
    result = _row_major_transpose(product_, [natural.index(i) for i in out])
    return result.astype(result_dtype or a.dtype)


def _spec_terms(spec: str) -> tuple[str, str, str]:
    """"ab,bc->ac" -> ("ab", "bc", "ac")."""
    inputs, out = spec.split("->")
    a_axes, b_axes = inputs.split(",")
    return a_axes, b_axes, out


def _row_major_transpose(x: Array, perm: Sequence[int]) -> Array:
    """`x.transpose(perm)` as a row-major array. A transpose reaches XLA's CPU pipeline as a
    view with a permuted layout, which the bf16 dot kernels reject; transposing with a unit
    axis added and dropping it again gives a plain row-major copy."""
    perm = list(perm)
    if perm == list(range(x.ndim)):
        return x
    shape = [x.shape[i] for i in perm]
    return x[..., None].transpose([x.ndim, *perm]).reshape(shape)


def product(spec: str, a: Array, b: Array, result_dtype: Any = None) -> Array:
    """`jnp.einsum(spec, a, b)` of two operands of one dtype, differentiable, with its result in
    `result_dtype` (default: the operands' dtype); bfloat16 on CPU as `_bf16_cpu_product`."""
    if a.dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
        return _bf16_cpu_product(spec, result_dtype, a, b)
    return jnp.einsum(spec, a, b, preferred_element_type=result_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _bf16_cpu_product(spec: str, result_dtype: Any, a: Array, b: Array) -> Array:
    """`_bf16_cpu_einsum` with a backward pass of `_bf16_cpu_einsum`s too, over the cotangent
    rounded to bfloat16: left to autodiff, the backward products take the float32 cotangent of
    the forward product's float32 result and run in float32."""
    return _bf16_cpu_einsum(spec, a, b, result_dtype)


def _bf16_cpu_product_fwd(spec: str, result_dtype: Any, a: Array,
                          b: Array) -> tuple[Array, tuple[Array, Array]]:
    return _bf16_cpu_einsum(spec, a, b, result_dtype), (a, b)


def _bf16_cpu_product_bwd(spec: str, result_dtype: Any, residuals: tuple[Array, Array],
                          grad: Array) -> tuple[Array, Array]:
    a, b = residuals
    grad = grad.astype(a.dtype)
    a_axes, b_axes, out = _spec_terms(spec)
    return (_bf16_cpu_einsum(f"{out},{b_axes}->{a_axes}", grad, b),
            _bf16_cpu_einsum(f"{a_axes},{out}->{b_axes}", a, grad))


_bf16_cpu_product.defvjp(_bf16_cpu_product_fwd, _bf16_cpu_product_bwd)


@jax.custom_vjp
def project(x: Array, kernel: Array) -> Array:
    """`x @ kernel` over the last axis, with a backward pass laid out for XLA CPU
    (`_project_bwd`)."""
    rows = x.reshape(-1, x.shape[-1])
    return product("td,df->tf", rows, kernel).reshape(*x.shape[:-1], kernel.shape[-1])


def _project_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return project(x, kernel), (x, kernel)


def _project_bwd(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    """Left to autodiff, the kernel's gradient contracts the token axis of both operands, and
    XLA CPU copies the larger one (the gradient, e.g. [tokens, vocab] for the output head)
    into transposed layout and hands the product to Eigen. On CPU in float32 it is
    `_cpu_kernel_grad` instead. Other backends contract either layout natively, and bfloat16
    on CPU is laid out by `_bf16_cpu_einsum`, so they get autodiff's form."""
    x, kernel = residuals
    rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    if jax.default_backend() == "cpu" and rows.dtype != jnp.bfloat16:
        kernel_grad = _cpu_kernel_grad(rows, grad_rows)
    else:
        kernel_grad = product("td,tf->df", rows, grad_rows)
    return product("tf,df->td", grad_rows, kernel).reshape(x.shape), kernel_grad


def _cpu_kernel_grad(rows: Array, grad_rows: Array) -> Array:
    """[in, out] = rows [tokens, in] contracted with grad_rows [tokens, out] over the tokens, as
    a plain product over a transposed copy of the narrower operand, which XLA CPU gives to
    the YNN dot kernels. With the input the wider (the MLP's `wo`), the product is taken as
    [out, in] and copied back to [in, out] row-major, a kernel-sized copy where the other
    way costs a token-sized one: 0.97-0.99 of the float32 "tiny" step time, "small"
    unchanged (docs/performance.md). The barriers keep XLA from folding the transposes into
    the product or its consumers, which would then read a strided layout."""
    barrier = jax.lax.optimization_barrier
    if rows.shape[1] > grad_rows.shape[1]:
        return _row_major_transpose(barrier(_cpu_kernel_grad(grad_rows, rows)), (1, 0))
    return product("dt,tf->df", barrier(rows.T), grad_rows)


project.defvjp(_project_fwd, _project_bwd)


class LayerNorm(nn.Module):
    """T5's RMS norm: no mean subtraction, no bias, statistics in float32."""

    dtype: Any = jnp.float32
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x.astype(jnp.float32)
        scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
        return scale_features(y, scale).astype(self.dtype)


def sum_leading(x: Array, keep_shape: tuple[int, ...]) -> Array:
    """`x` summed over its leading axes to `keep_shape` (its trailing axes), in float32. On
    CPU as a product with a row of ones: XLA CPU sums over a leading axis one output element
    at a time, with strided reads (8 ms on a [4096, 512] array on 2 cores, against 1.3 ms as
    a product; docs/performance.md); the dot kernels stream the rows."""
    rows = x.reshape(-1, math.prod(keep_shape))
    if jax.default_backend() == "cpu":
        total = jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows,
                        preferred_element_type=jnp.float32)
    else:
        total = rows.sum(axis=0, dtype=jnp.float32)
    return total.astype(x.dtype).reshape(keep_shape)


@jax.custom_vjp
def scale_features(y: Array, scale: Array) -> Array:
    """`y * scale` for a per-feature `scale` [features]: the layer norm's learned scale, whose
    gradient sums over every token (`sum_leading`)."""
    return y * scale


def _scale_features_fwd(y: Array, scale: Array) -> tuple[Array, tuple[Array, Array]]:
    return y * scale, (y, scale)


def _scale_features_bwd(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    y, scale = residuals
    return grad * scale, sum_leading(grad * y, scale.shape)


scale_features.defvjp(_scale_features_fwd, _scale_features_bwd)


class Embed(nn.Module):
    """Token embedding shared by encoder, decoder and (T5 1.0) the output head."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                                (self.num_embeddings, self.features), ("vocab", "embed"))

    def __call__(self, ids: Array) -> Array:
        # A gather, not t5x's one-hot matmul: the latter costs 2*vocab*emb FLOPs per token on CPU.
        out = jnp.take(self.embedding, ids.astype(jnp.int32), axis=0).astype(self.dtype)
        return _constrain(out, ("batch", "length", "embed"))

    def attend(self, query: Array) -> Array:
        """Logits against the embedding matrix, in float32 for stability (as t5x)."""
        return jnp.einsum("...d,vd->...v", query.astype(jnp.float32), self.embedding)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int = NUM_RELPOS_BUCKETS,
                             max_distance: int = RELPOS_MAX_DISTANCE) -> np.ndarray:
    """Mesh-TF/t5x bucketing of `key_pos - query_pos`: exact near 0, log-spaced up to max_distance.

    Computed in numpy (a compile-time constant), in float32 like t5x so buckets match bit for bit.
    """
    n = -np.asarray(relative_position, dtype=np.int32)
    bucket = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        bucket += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    scaled = (np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
              / np.log(max_distance / max_exact) * (num_buckets - max_exact))
    large = np.minimum(max_exact + scaled.astype(np.int32), num_buckets - 1)
    return bucket + np.where(n < max_exact, n, large)


@jax.custom_vjp
def _lookup_buckets(table: Array, buckets: Array) -> Array:
    """`table[:, buckets]`: [heads, num_buckets] -> [heads, q, k]."""
    return jnp.take(table, buckets, axis=1)


def _lookup_buckets_fwd(table: Array, buckets: Array) -> tuple[Array, tuple[Array, Array]]:
    return _lookup_buckets(table, buckets), (table, buckets)


def _lookup_buckets_bwd(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, None]:
    """Scatter-add of the cotangent, behind a barrier. The cotangent is the sum of every
    layer's [heads, q, k] gradient, each already summed over the batch by `add_bias`. Before
    that, XLA CPU fused the batch sums into the scatter's transposed [q*k, heads] order, a
    strided walk of about 2% of a train step; the barrier was the first remedy."""
    table, buckets = residuals
    grad = jax.lax.optimization_barrier(grad)
    return jnp.zeros_like(table).at[:, buckets].add(grad), None


_lookup_buckets.defvjp(_lookup_buckets_fwd, _lookup_buckets_bwd)


class RelativePositionBiases(nn.Module):
    """Per-head learned bias for each relative-position bucket, shape [1, heads, q, k]."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, qlen: int, klen: int, bidirectional: bool) -> Array:
        table = _param(self, "rel_embedding",
                       nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                       (self.num_heads, NUM_RELPOS_BUCKETS), ("heads", "relpos_buckets"))
        buckets = relative_position_bucket(
            np.arange(klen)[None, :] - np.arange(qlen)[:, None], bidirectional)
        return _lookup_buckets(table.astype(self.dtype), jnp.asarray(buckets))[None]


def head_logits(y: Array, kernel: Array, cfg: T5Config) -> Array:
    """The output head `logits_dense`: float32 logits [..., vocab] of the decoder's output y
    [..., emb], as t5x's float32 DenseGeneral. With bfloat16 activations on CPU, bf16 operands
    (the kernel rounded, y already bf16) multiplied into float32, the precision a TPU gives
    t5x's float32 head at its default matmul precision (one bf16 pass): XLA CPU's float32
    products of "small"'s [tokens, 512] x [512, 32128] head took 13% of the bf16 train step's
    CPU time on an AMX Xeon (docs/performance.md)."""
    if cfg.activation_dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
        rows = y.reshape(-1, y.shape[-1]).astype(jnp.bfloat16)
        logits = product("td,dv->tv", rows, kernel.astype(jnp.bfloat16), jnp.float32)
        return logits.reshape(*y.shape[:-1], kernel.shape[-1])
    return project(y.astype(jnp.float32), kernel.astype(jnp.float32))


class Kernel(nn.Module):
    """A t5x DenseGeneral `kernel` [in, out] under its module name, returned unapplied, for
    projections that are not a plain `x @ kernel` (attention's per-head einsums)."""

    shape: tuple[int, int]
    axes: tuple[str, str]
    init: Initializer = _kernel_init

    @nn.compact
    def __call__(self) -> Array:
        return _param(self, "kernel", self.init, self.shape, self.axes)


def project_heads(x: Array, kernel: Array, cfg: T5Config) -> Array:
    """[batch, length, emb] through a q/k/v kernel [emb, heads*head_dim] (viewed as [emb, heads,
    head_dim]) straight to [batch, heads, length, head_dim]: heads-first, so the per-head
    matmuls need no transpose of the activations (3-5% less CPU time per train step than
    splitting heads after the projection, docs/performance.md)."""
    dtype = cfg.activation_dtype
    k = kernel.astype(dtype).reshape(x.shape[-1], cfg.num_heads, cfg.head_dim)
    return product("ble,ehd->bhld", x.astype(dtype), k)


@jax.custom_vjp
def attention_logits(q: Array, k: Array) -> Array:
    """q.k per head: [batch, heads, q_len, head_dim] by [batch, heads, k_len, head_dim] to
    [batch, heads, q_len, k_len], with a backward laid out for XLA CPU
    (`_attention_logits_bwd`)."""
    return product("bhqd,bhkd->bhqk", q, k)


def _attention_logits_fwd(q: Array, k: Array) -> tuple[Array, tuple[Array, Array]]:
    return attention_logits(q, k), (q, k)


def _attention_logits_bwd(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    """The key's gradient computed as [.., head_dim, k_len] and then transposed. Autodiff's
    [.., k_len, head_dim] product contracts the query axis of both operands with the [q, k]
    cotangent on the left; XLA CPU hands that form to Eigen, which packs the strided operand.
    On a Zen 3 EPYC XLA gave the transposed form to the YNN dot kernels (3-4% less time per
    "small" train step); on a Zen 4 it goes to Eigen too and is still the faster form (7.9 ms
    against 9.4 on "tiny"'s shapes; docs/performance.md). Other backends contract either
    layout natively."""
    q, k = residuals
    query_grad = product("bhqk,bhkd->bhqd", grad, k)
    if jax.default_backend() == "cpu":
        # The barrier keeps XLA from folding the transpose back into the product.
        key_grad_t = jax.lax.optimization_barrier(product("bhqd,bhqk->bhdk", q, grad))
        return query_grad, jnp.swapaxes(key_grad_t, -1, -2)
    return query_grad, product("bhqk,bhqd->bhkd", grad, q)


attention_logits.defvjp(_attention_logits_fwd, _attention_logits_bwd)


@jax.custom_vjp
def add_bias(logits: Array, bias: Array) -> Array:
    """`logits + bias` for a bias broadcast over leading axes only (the relative-position bias
    [1, heads, q, k] over the batch, the mask's [batch, 1, q, k] has no gradient), with the
    bias's gradient summed over them by `sum_leading`: left to autodiff, XLA CPU fused the
    batch sums of all layers into one strided loop, 2% of a "small" train step."""
    return logits + bias


def _add_bias_fwd(logits: Array, bias: Array) -> tuple[Array, tuple[int, ...]]:
    return logits + bias, bias.shape


def _add_bias_bwd(bias_shape: tuple[int, ...], grad: Array) -> tuple[Array, Array]:
    lead = 0
    while lead < len(bias_shape) and bias_shape[lead] == 1 < grad.shape[lead]:
        lead += 1
    if bias_shape[lead:] == grad.shape[lead:]:
        bias_grad = sum_leading(grad, bias_shape[lead:])
    else:  # broadcast over other axes too (the mask's, whose gradient is never used)
        axes = tuple(i for i, (b, g) in enumerate(zip(bias_shape, grad.shape)) if b != g)
        bias_grad = jnp.sum(grad, axis=axes)
    return grad, bias_grad.reshape(bias_shape)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def attend(q: Array, k: Array, v: Array, biases: Sequence[Array], cfg: T5Config,
           keep: Array | None = None) -> Array:
    """softmax(q.k + biases) @ v per head: [batch, heads, q_len, head_dim], in the activation
    dtype. `biases` are additive terms each broadcastable to [batch, heads, q_len, k_len];
    `keep` an optional dropout multiplier of the weights. Logits in float32 with
    `float32_attention_logits`; no 1/sqrt(d) (folded into the query kernel's initialisation,
    as in t5x).

    The softmax's division by its sum is applied to the [..., head_dim] output rather than to
    the [..., k_len] weights: one fewer pass over the weights forward, and a backward whose
    sum runs over head_dim instead of k_len (docs/performance.md).
    """
    if cfg.float32_attention_logits:
        q, k = q.astype(jnp.float32), k.astype(jnp.float32)
    logits = attention_logits(q, k)
    for bias in biases:
        logits = add_bias(logits, bias.astype(q.dtype))
    # The maximum only keeps exp() in range; it cancels out, so no gradient flows through it.
    shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    unnormalised = jnp.exp(logits - shift)
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    if keep is not None:
        unnormalised = unnormalised * keep.astype(unnormalised.dtype)
    dtype = cfg.activation_dtype
    out = product("bhqk,bhkd->bhqd", unnormalised.astype(dtype), v)
    return out / total.astype(dtype)


def merge_heads(out: Array, kernel: Array, cfg: T5Config) -> Array:
    """The attended values [batch, heads, q_len, head_dim] through the output kernel
    [heads*head_dim, emb], contracting heads and head_dim together: [batch, q_len, emb]."""
    dtype = cfg.activation_dtype
    return product("bhqd,hde->bqe", out,
                   kernel.astype(dtype).reshape(cfg.num_heads, cfg.head_dim, -1))


class MultiHeadAttention(nn.Module):
    """t5x attention: q/k/v kernels [emb, heads*head_dim], computed heads-first
    (`project_heads`, `attend`, `merge_heads`; cached decoding shares the first two)."""

    config: T5Config

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array, biases: Sequence[Array],
                 deterministic: bool) -> Array:
        cfg = self.config
        emb, heads, head_dim = inputs_q.shape[-1], cfg.num_heads, cfg.head_dim
        query_init = lambda *a: _attention_init(*a) / np.sqrt(head_dim)  # noqa: E731
        kernel = functools.partial(Kernel, (emb, heads * head_dim), ("embed", "joined_kv"))

        def heads_of(x: Array, name: str, init: Initializer = _attention_init) -> Array:
            return _constrain(project_heads(x, kernel(init, name=name)(), cfg),
                              ("batch", "heads", "length", "kv"))

        q = heads_of(inputs_q, "query", query_init)
        k = heads_of(inputs_kv, "key")
        v = heads_of(inputs_kv, "value")
        keep = None
        if not deterministic and cfg.dropout_rate > 0.0:
            # t5x drops whole key columns per head (broadcast over the query axis).
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - cfg.dropout_rate,
                                        k.shape[:2] + (1, k.shape[2]))
            keep = keep / (1.0 - cfg.dropout_rate)
        out_kernel = Kernel((heads * head_dim, emb), ("joined_kv", "embed"), _attention_init,
                            name="out")()
        return merge_heads(attend(q, k, v, biases, cfg, keep), out_kernel, cfg)


class MlpBlock(nn.Module):
    """Feed-forward block: `wi` (one activation) or gated `wi_0`, `wi_1`, ... then `wo`."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        acts = cfg.mlp_activations
        hidden = []
        for i, act in enumerate(acts):
            name = "wi" if len(acts) == 1 else f"wi_{i}"
            h = Dense(cfg.mlp_dim, ("embed", "mlp"), dtype, name=name)(x)
            hidden.append(h if act == "linear" else getattr(nn, act)(h))
        h = functools.reduce(operator.mul, hidden)
        h = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
        h = _constrain(h, ("batch", "length", "mlp"))
        return Dense(x.shape[-1], ("mlp", "embed"), dtype, name="wo")(h)


class _Residual(nn.Module):
    """Dropout (broadcast over length, as t5x) then residual add, shared by both layer kinds."""

    rate: float

    @nn.compact
    def __call__(self, y: Array, residual: Array, deterministic: bool) -> Array:
        y = nn.Dropout(self.rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        return _constrain(y + residual, ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: Array, biases: Sequence[Array], deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        h = LayerNorm(dtype, name="pre_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg, name="attention")(h, h, biases, deterministic)
        x = _Residual(cfg.dropout_rate)(h, x, deterministic)
        h = LayerNorm(dtype, name="pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, name="mlp")(h, deterministic)
        return _Residual(cfg.dropout_rate)(h, x, deterministic)


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, y: Array, encoded: Array, self_biases: Sequence[Array],
                 cross_biases: Sequence[Array], deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        h = LayerNorm(dtype, name="pre_self_attention_layer_norm")(y)
        h = MultiHeadAttention(cfg, name="self_attention")(h, h, self_biases, deterministic)
        y = _Residual(cfg.dropout_rate)(h, y, deterministic)
        h = LayerNorm(dtype, name="pre_cross_attention_layer_norm")(y)
        h = MultiHeadAttention(cfg, name="encoder_decoder_attention")(
            h, encoded, cross_biases, deterministic)
        y = _Residual(cfg.dropout_rate)(h, y, deterministic)
        h = LayerNorm(dtype, name="pre_mlp_layer_norm")(y)
        h = MlpBlock(cfg, name="mlp")(h, deterministic)
        return _Residual(cfg.dropout_rate)(h, y, deterministic)


def _layer_class(cls: type[nn.Module], cfg: T5Config) -> type[nn.Module]:
    """`cls`, rematerialised when `cfg.remat`; the `deterministic` flag (last argument) stays
    static. Same parameter tree either way, so checkpoints do not depend on the setting."""
    if not cfg.remat:
        return cls
    last = len(inspect.signature(cls.__call__).parameters) - 1  # argnums count `self` as 0
    return nn.remat(cls, static_argnums=(last,))


def _mask_bias(mask: Array, dtype: Any) -> Array:
    """Boolean [batch, q, k] mask -> additive [batch, 1, q, k] bias (0 or MASKED_LOGIT)."""
    return jnp.where(mask, 0.0, MASKED_LOGIT).astype(dtype)[:, None]


def attention_biases(relpos: Array, mask: Array, dtype: Any) -> tuple[Array, Array]:
    """The relative-position bias [1, heads, q, k] and the mask's [batch, 1, q, k], kept as two
    terms that each layer adds to its logits. Summed once into one [batch, heads, q, k] bias,
    the bias's gradient has that shape in every layer, and XLA added up all layers' copies in
    one pass at the end, then reduced over the batch in the bucket lookup's transposed order;
    added per layer, each layer's gradient is summed over the batch where it is made
    (docs/performance.md)."""
    return relpos, _mask_bias(mask, dtype)


def _pairwise(query: Array, key: Array, fn: Callable = jnp.logical_and) -> Array:
    return fn(query[:, :, None], key[:, None, :])


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens: Array, mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        length = tokens.shape[-1]
        # One relative-position bias for the whole stack (t5x recomputes the same value per layer),
        # added to the logits apart from the mask: see `attention_biases`.
        biases = attention_biases(
            RelativePositionBiases(cfg.num_heads, dtype, name="relpos_bias")(length, length, True),
            mask, dtype)
        x = self.shared_embedding(tokens)
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        layer = _layer_class(EncoderLayer, cfg)
        for i in range(cfg.num_encoder_layers):
            x = layer(cfg, name=f"layers_{i}")(x, biases, deterministic)
        x = LayerNorm(dtype, name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoded: Array, tokens: Array, self_mask: Array, cross_mask: Array,
                 deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        length = tokens.shape[-1]
        self_biases = attention_biases(
            RelativePositionBiases(cfg.num_heads, dtype, name="relpos_bias")(length, length, False),
            self_mask, dtype)
        cross_biases = (_mask_bias(cross_mask, dtype),)
        y = self.shared_embedding(tokens)
        y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        layer = _layer_class(DecoderLayer, cfg)
        for i in range(cfg.num_decoder_layers):
            y = layer(cfg, name=f"layers_{i}")(y, encoded, self_biases, cross_biases, deterministic)
        y = LayerNorm(dtype, name="decoder_norm")(y)
        y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / np.sqrt(y.shape[-1])
        else:
            kernel = Kernel((y.shape[-1], cfg.vocab_size), ("embed", "vocab"),
                            name="logits_dense")()
            logits = head_logits(y, kernel, cfg)
        return _constrain(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """Encoder-decoder T5; call signature and masking follow t5x's `network.Transformer`."""

    config: T5Config

    def setup(self) -> None:
        cfg = self.config
        self.shared_embedding = Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype,
                                      name="token_embedder")
        self.encoder = Encoder(cfg, self.shared_embedding)
        self.decoder = Decoder(cfg, self.shared_embedding)

    def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
               enable_dropout: bool = True) -> Array:
        """Encoder states [batch, length, emb]; padding (id 0) and other segments are masked."""
        nonpad = encoder_input_tokens > 0
        mask = _pairwise(nonpad, nonpad)
        if encoder_segment_ids is not None:
            mask &= _pairwise(encoder_segment_ids, encoder_segment_ids, jnp.equal)
        return self.encoder(encoder_input_tokens, mask, deterministic=not enable_dropout)

    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None,
               decoder_positions: Array | None = None,  # noqa: ARG002 (t5x signature)
               enable_dropout: bool = True) -> Array:
        """Logits [batch, target_length, vocab]; causal, padding and packing masks as t5x.

        Padding is read from `decoder_target_tokens` (id 0); for generation pass ones there.
        Relative positions use the raw index, which is exact for packed segments because
        attention across segments is masked (as in t5x).
        """
        length = decoder_target_tokens.shape[-1]
        target_nonpad = decoder_target_tokens > 0
        causal = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
        self_mask = _pairwise(target_nonpad, target_nonpad) & causal[None]
        cross_mask = _pairwise(target_nonpad, encoder_input_tokens > 0)
        if decoder_segment_ids is not None:
            self_mask &= _pairwise(decoder_segment_ids, decoder_segment_ids, jnp.equal)
        if encoder_segment_ids is not None:
            if decoder_segment_ids is None:
                raise ValueError("packed inputs need both encoder_ and decoder_segment_ids")
            cross_mask &= _pairwise(decoder_segment_ids, encoder_segment_ids, jnp.equal)
        return self.decoder(encoded, decoder_input_tokens, self_mask, cross_mask,
                            deterministic=not enable_dropout)

    def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                 decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
                 decoder_segment_ids: Array | None = None,
                 encoder_positions: Array | None = None,  # noqa: ARG002 (t5x signature)
                 decoder_positions: Array | None = None, *, enable_dropout: bool = True,
                 decode: bool = False) -> Array:
        if decode:
            raise NotImplementedError(
                "no decode=True path: generate with decoding.greedy_decode (key/value cache)")
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                           decoder_positions, enable_dropout)


def init_params(model: Transformer, rng: Array, batch_size: int = 1, inputs_length: int = 1,
                targets_length: int = 1) -> dict:
    """Boxed (logically annotated) parameters; shapes do not depend on the dummy lengths."""
    enc = jnp.ones((batch_size, inputs_length), jnp.int32)
    dec = jnp.ones((batch_size, targets_length), jnp.int32)
    return model.init({"params": rng}, enc, dec, dec, enable_dropout=False)["params"]


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "eos_id"))
def greedy_decode(model: Transformer, params: Any, encoder_input_tokens: Array,
                  max_decode_length: int, eos_id: int = 1) -> Array:
    """Greedy generation without a KV cache: each step re-runs the decoder on the prefix.

    Returns [batch, max_decode_length] generated ids (no start token); after EOS a row is
    padded with 0, as Hugging Face's `generate` does. Costs O(length^2) decoder work: the
    reference that `decoding.greedy_decode` (cached, one token per step) must match.
    """
    variables = {"params": params}
    encoded = model.apply(variables, encoder_input_tokens, enable_dropout=False,
                          method=Transformer.encode)
    batch = encoder_input_tokens.shape[0]
    ones = jnp.ones((batch, max_decode_length), jnp.int32)

    def step(i: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        tokens, done = carry
        decoder_inputs = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]  # start token id 0
        logits = model.apply(variables, encoded, encoder_input_tokens, decoder_inputs, ones,
                             enable_dropout=False, method=Transformer.decode)
        nxt = jnp.where(done, 0, jnp.argmax(logits[:, i], axis=-1).astype(jnp.int32))
        return tokens.at[:, i].set(nxt), done | (nxt == eos_id)

    tokens = jnp.zeros((batch, max_decode_length), jnp.int32)
    tokens, _ = jax.lax.fori_loop(0, max_decode_length, step,
                                  (tokens, jnp.zeros((batch,), bool)))
    return tokens

