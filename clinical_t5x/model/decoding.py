"""Greedy generation with a key/value cache: the decoder runs one token per step.

`network.greedy_decode` re-runs the whole decoder on the prefix for every new token (quadratic
work, kept as the reference). Here the encoder runs once, each decoder layer's cross-attention
keys and values are projected once from the encoder states, and self-attention keeps the keys
and values of the tokens generated so far in a fixed-size cache, so a step costs one token's
worth of decoder work. The loop stops as soon as every row has produced EOS. The two parts
are compiled apart (`_encode`, `_generate`) because on CPU the loop's small matrix products
want different XLA settings from the encoder's large ones.

The arithmetic is the network's own: norms and feed-forward blocks are `network`'s modules
applied to their parameter subtrees, the relative-position bias is `network`'s table, and
masked cache slots get `network.MASKED_LOGIT`, whose softmax weight is exactly zero, so the
tokens match the uncached path's. Each row also gets its log-probability (the sum of the
chosen tokens' log-softmax, EOS included), which ranks candidate answers such as the windows
of one long document.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from clinical_t5x.model import network

Array = jax.Array


class Decoded(NamedTuple):
    """`tokens` [batch, max_decode_length] (0 after EOS, no start token); `scores` [batch]
    float32 log-probability of each row's tokens up to and including its EOS."""

    tokens: Array
    scores: Array


def _project(cfg: network.T5Config, x: Array, kernel: Array) -> Array:
    """One position's activations [batch, emb] through a 2-D kernel, as `network.Dense` does."""
    dtype = cfg.activation_dtype
    return network.project(x.astype(dtype), kernel.astype(dtype))


def _split_heads(cfg: network.T5Config, x: Array) -> Array:
    """[batch, heads*head_dim] -> [batch, heads, 1, head_dim]: a free reshape for one position."""
    return x.reshape(x.shape[0], cfg.num_heads, 1, cfg.head_dim)


def _attend(cfg: network.T5Config, params: dict, x: Array, keys: Array, values: Array,
            bias: Array) -> Array:
    """One query position [batch, emb] against keys/values [batch, heads, klen, head_dim], with
    the network's attention (`network.attend`; no dropout).

    The kernels stay 2-D: with a single query position the heads split and merge are free
    reshapes of [batch, heads*head_dim], whereas `network.project_heads`' [emb, heads,
    head_dim] view made XLA copy every q/out kernel into a new layout on every step."""
    q = _split_heads(cfg, _project(cfg, x, params["query"]["kernel"]))
    out = network.attend(q, keys, values, (bias,), cfg)  # [batch, heads, 1, head_dim]
    return _project(cfg, out.reshape(x.shape[0], -1), params["out"]["kernel"])


def _norm(cfg: network.T5Config, params: dict, x: Array) -> Array:
    return network.LayerNorm(cfg.activation_dtype).apply({"params": params}, x)


def _mlp(cfg: network.T5Config, params: dict, x: Array) -> Array:
    """`network.MlpBlock` on one position [batch, emb] (viewed as a length-1 sequence, the
    layout its sharding constraint names)."""
    return network.MlpBlock(cfg).apply({"params": params}, x[:, None, :], deterministic=True)[:, 0]


def _output_logits(cfg: network.T5Config, params: dict, y: Array) -> Array:
    if cfg.logits_via_embedding:
        embedding = params["token_embedder"]["embedding"]
        return jnp.einsum("...d,vd->...v", y.astype(jnp.float32), embedding) / np.sqrt(
            y.shape[-1])
    return network.head_logits(y, params["decoder"]["logits_dense"]["kernel"], cfg)


# XLA CPU's YNN dot kernels pack the weight matrix on every call; a decoding step multiplies a
# handful of rows (one per sequence) by every weight once, so the packing doubles the memory
# traffic that bounds the step. Without them the loop's dots go to Eigen: 17% less time for
# the tiny model's 32 tokens on a 2-core AMD EPYC, same tokens (docs/finetune.md). The
# encoder's long matrices keep XLA's defaults.
_LOOP_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _decoder_layers(cfg: network.T5Config, params: Any) -> list[dict]:
    """Each decoder layer's parameter subtree, in order."""
    return [params["decoder"][f"layers_{i}"] for i in range(cfg.num_decoder_layers)]


def _cross_keys_values(cfg: network.T5Config, layers: list[dict],
                       encoded: Array) -> list[tuple[Array, Array]]:
    """Every decoder layer's cross-attention keys and values [batch, heads, enc_len, head_dim],
    from one product of the encoder states with all their kernels side by side (one large
    matrix product instead of two small ones per layer), then one transpose to heads-first."""
    dtype = cfg.activation_dtype
    names = ("key", "value")
    kernels = [layer["encoder_decoder_attention"][name]["kernel"].astype(dtype)
               for layer in layers for name in names]
    batch, length, emb = encoded.shape
    projected = network.project(encoded.astype(dtype).reshape(batch * length, emb),
                                jnp.concatenate(kernels, axis=1))
    heads_first = jnp.transpose(
        projected.reshape(batch, length, len(kernels), cfg.num_heads, cfg.head_dim),
        (2, 0, 3, 1, 4))  # [layers*2, batch, heads, enc_len, head_dim]
    return [(heads_first[2 * n], heads_first[2 * n + 1]) for n in range(len(layers))]


@functools.partial(jax.jit, static_argnames=("model",))
def _encode(model: network.Transformer, params: Any,
            encoder_input_tokens: Array) -> tuple[list[tuple[Array, Array]], Array]:
    """What every step reads from the encoder: the cross-attention keys/values per layer and
    the padding mask as an additive bias [batch, 1, 1, enc_len]."""
    cfg = model.config
    encoded = model.apply({"params": params}, encoder_input_tokens, enable_dropout=False,
                          method=network.Transformer.encode)
    cross_bias = network._mask_bias(  # noqa: SLF001 (the network's own masking)
        (encoder_input_tokens > 0)[:, None, :], cfg.activation_dtype)
    return _cross_keys_values(cfg, _decoder_layers(cfg, params), encoded), cross_bias


def _generate(model: network.Transformer, params: Any, cross: list[tuple[Array, Array]],
              cross_bias: Array, max_decode_length: int, eos_id: int) -> Decoded:
    """The token loop: one decoder position per step, stopping once every row has ended."""
    cfg = model.config
    dtype = cfg.activation_dtype
    dec = params["decoder"]
    layers = _decoder_layers(cfg, params)
    batch, length = cross_bias.shape[0], max_decode_length
    relpos = network.RelativePositionBiases(cfg.num_heads, dtype).apply(
        {"params": dec["relpos_bias"]}, length, length, False)  # [1, heads, length, length]
    embedding = params["token_embedder"]["embedding"]
    # One array per layer (not one stacked array): XLA then updates each in place per step.
    empty_cache = tuple(jnp.zeros((batch, cfg.num_heads, length, cfg.head_dim), dtype)
                        for _ in layers)

    def step(carry):
        i, token, tokens, scores, done, k_cache, v_cache = carry
        y = jnp.take(embedding, token, axis=0).astype(dtype)  # [batch, emb]
        visible = (jnp.arange(length) <= i)[None, None, None, :]
        self_bias = (jax.lax.dynamic_slice_in_dim(relpos, i, 1, axis=2)
                     + jnp.where(visible, 0.0, network.MASKED_LOGIT).astype(dtype))
        new_k, new_v = [], []
        for n, layer in enumerate(layers):
            h = _norm(cfg, layer["pre_self_attention_layer_norm"], y)
            k, v = (_split_heads(cfg, _project(cfg, h, layer["self_attention"][name]["kernel"]))
                    for name in ("key", "value"))
            keys = jax.lax.dynamic_update_slice_in_dim(k_cache[n], k, i, axis=2)
            values = jax.lax.dynamic_update_slice_in_dim(v_cache[n], v, i, axis=2)
            new_k.append(keys)
            new_v.append(values)
            y = y + _attend(cfg, layer["self_attention"], h, keys, values, self_bias)
            h = _norm(cfg, layer["pre_cross_attention_layer_norm"], y)
            y = y + _attend(cfg, layer["encoder_decoder_attention"], h, *cross[n], cross_bias)
            y = y + _mlp(cfg, layer["mlp"], _norm(cfg, layer["pre_mlp_layer_norm"], y))
        logits = _output_logits(cfg, params, _norm(cfg, dec["decoder_norm"], y))
        best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        logprob = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                                      best[:, None], axis=-1)[:, 0]
        nxt = jnp.where(done, 0, best)
        scores = scores + jnp.where(done, 0.0, logprob)
        tokens = tokens.at[:, i].set(nxt)
        return (i + 1, nxt, tokens, scores, done | (nxt == eos_id), tuple(new_k), tuple(new_v))

    def running(carry) -> Array:
        i, done = carry[0], carry[4]
        return (i < length) & ~jnp.all(done)

    init = (jnp.int32(0), jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, length), jnp.int32),
            jnp.zeros((batch,), jnp.float32), jnp.zeros((batch,), bool),
            empty_cache, empty_cache)
    _, _, tokens, scores, _, _, _ = jax.lax.while_loop(running, step, init)
    return Decoded(tokens, scores)


_STATIC = ("model", "max_decode_length", "eos_id")
_generate_on_cpu = jax.jit(_generate, static_argnames=_STATIC,
                           compiler_options=_LOOP_COMPILER_OPTIONS)
_generate_elsewhere = jax.jit(_generate, static_argnames=_STATIC)


def greedy_decode(model: network.Transformer, params: Any, encoder_input_tokens: Array,
                  max_decode_length: int, eos_id: int = 1) -> Decoded:
    """Greedy generation with a self-attention cache, batched and jit-compiled.

    Same tokens as `network.greedy_decode` (start token 0, rows padded with 0 after EOS);
    `eos_id=-1` never stops (benchmarks). Parameters may be boxed (as `network.init_params`
    returns them) or plain.
    """
    params = nn.unbox(params)
    cross, cross_bias = _encode(model, params, encoder_input_tokens)
    generate = _generate_on_cpu if jax.default_backend() == "cpu" else _generate_elsewhere
    return generate(model, params, cross, cross_bias, max_decode_length, eos_id)
