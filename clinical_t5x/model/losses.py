"""Cross-entropy with z-loss and t5x's loss normalisation, plus token accuracy.

Semantics follow t5x (`t5x/losses.py`, `EncoderDecoderModel.loss_fn`): the loss is a SUM over
weighted target tokens, divided by `loss_normalizing_factor` when one is given (a number, or
one of "NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE").
The default (None) is t5x's: no normalisation, which Adafactor's scale invariance tolerates.
Weights are `decoder_loss_weights` when present, else `decoder_target_tokens > 0`.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
LossNormalizingFactor = float | int | str | None

_SPECIAL_FACTORS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE")


class LossSums(NamedTuple):
    """Summed (already normalised) losses and counts of one batch or microbatch; addable."""

    loss: Array
    z_loss: Array
    correct: Array  # weighted count of argmax hits
    weight_sum: Array  # sum of loss weights (t5x's nonpadding token count)
    num_tokens: Array  # tokens with non-zero weight

    def __add__(self, other: "LossSums") -> "LossSums":  # type: ignore[override]
        return LossSums(*(a + b for a, b in zip(self, other)))


def cross_entropy_with_z_loss(logits: Array, targets: Array, z_loss: float) -> tuple[Array, Array]:
    """Per-token `-log p(target) + z_loss * log(Z)^2` and the z-loss term, both [batch, length].

    Computed in float32. The target logit is picked with a fused compare-and-sum rather than a
    materialised one-hot (a [batch, length, vocab] buffer avoided in both passes).
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    z_term = z_loss * jnp.square(log_z)
    return log_z - _target_logit(logits, targets)[..., 0] + z_term, z_term


def _target_logit(logits: Array, targets: Array) -> Array:
    """The target's logit, [batch, length, 1], picked with a fused compare-and-sum."""
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.sum(jnp.where(vocab_ids == targets[..., None], logits, 0.0), axis=-1,
                   keepdims=True)


def argmax_hits(logits: Array, targets: Array) -> Array:
    """`argmax(logits, -1) == targets` (the first maximum wins a tie, as in argmax) as [batch,
    length] booleans, without an argmax. XLA CPU computes an argmax as a scalar (value, index)
    reduction: on the output head of "tiny" ([1024, 8192]) it took as long as the rest of the
    loss's forward and backward together (docs/performance.md). Here a hit is a target logit
    equal to the row's maximum with no maximum at an earlier index; the maximum and the
    target's logit are the ones the cross-entropy computes (XLA merges the identical
    reductions), and the check for an earlier maximum is one fused, vectorised pass."""
    logits = logits.astype(jnp.float32)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    vocab_ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    earlier_max = jnp.any((vocab_ids < targets[..., None]) & (logits == row_max), axis=-1)
    return (_target_logit(logits, targets) == row_max)[..., 0] & ~earlier_max


def _per_sequence_weights(batch: Mapping[str, Array], weights: Array) -> Array:
    """Weights scaled so every (packed) sequence contributes equally (t5x AVERAGE_PER_SEQUENCE)."""
    segments = batch.get("decoder_segment_ids")
    if segments is None:
        totals = jnp.sum(weights, axis=-1, keepdims=True)
    else:
        # Total weight of each token's own segment: compare segment ids pairwise per row.
        same = segments[:, :, None] == segments[:, None, :]
        totals = jnp.einsum("bqk,bk->bq", same.astype(weights.dtype), weights)
    return jnp.where(totals > 0, weights / jnp.where(totals > 0, totals, 1.0), 0.0)


def normalizer_and_weights(factor: LossNormalizingFactor,
                           batch: Mapping[str, Array]) -> tuple[Array | float | None, Array]:
    """Resolve t5x's loss normalising factor on the FULL batch (so microbatching stays exact)."""
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    weights = (targets > 0).astype(jnp.float32) if weights is None else weights.astype(
        jnp.float32)
    if factor is None or not isinstance(factor, str):
        return factor, weights
    name = factor.upper()
    if name == "NUM_REAL_TARGET_TOKENS":
        return jnp.sum(weights), weights
    if name == "NUM_TOTAL_TARGET_TOKENS":
        return float(targets.size), weights
    if name == "AVERAGE_PER_SEQUENCE":
        weights = _per_sequence_weights(batch, weights)
        return jnp.sum(weights), weights
    raise ValueError(f"unknown loss_normalizing_factor {factor!r}; use a number, None or one "
                     f"of {', '.join(_SPECIAL_FACTORS)}")


def loss_sums(logits: Array, targets: Array, weights: Array, z_loss: float,
              normalizer: Array | float | None) -> LossSums:
    """Weighted, normalised loss sums and accuracy counts for one (micro)batch."""
    per_token, z_term = cross_entropy_with_z_loss(logits, targets, z_loss)
    loss, z = jnp.sum(per_token * weights), jnp.sum(z_term * weights)
    if normalizer is not None:
        loss, z = loss / normalizer, z / normalizer
    hits = argmax_hits(logits, targets).astype(jnp.float32)
    nonzero = (weights > 0).astype(jnp.float32)
    return LossSums(loss, z, jnp.sum(hits * nonzero), jnp.sum(weights), jnp.sum(nonzero))


def metrics_from_sums(sums: LossSums) -> dict[str, Array]:
    """t5x's scalar names; the counts let a caller aggregate accuracy over eval batches."""
    safe = jnp.maximum(sums.weight_sum, 1e-8)
    return {
        "loss": sums.loss,
        "z_loss": sums.z_loss,
        "cross_ent_loss": sums.loss - sums.z_loss,
        "loss_per_nonpadding_target_token": sums.loss / safe,
        "accuracy": sums.correct / jnp.maximum(sums.num_tokens, 1.0),
        "num_target_tokens": sums.num_tokens,
        "num_correct": sums.correct,
    }
