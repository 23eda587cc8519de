"""Batched, jit-compiled scoring and greedy decoding of any t5x-layout checkpoint.

The model is sized from the checkpoint's own parameters (no gin needed), its parameters are put
in the shards that `model.partitioning.Partitioner` gives them in training, and batches are
split over the `data` axis: the same code scores a tiny model on one CPU and a full-size model
on a pod slice. Sequences are padded to a few fixed lengths (`_bucket`) and batches to a fixed
size, so each shape compiles once.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from clinical_t5x.hf import convert
from clinical_t5x.model import decoding, losses, network, steps
from clinical_t5x.model.partitioning import Partitioner
from clinical_t5x.train import checkpoint_formats

Ids = Sequence[int]
_LENGTH_QUANTUM = 16  # padded lengths are multiples of this: few shapes, little padding


def _bucket(length: int) -> int:
    return max(_LENGTH_QUANTUM, -(-length // _LENGTH_QUANTUM) * _LENGTH_QUANTUM)


def _pad(rows: Sequence[Ids], length: int, count: int) -> np.ndarray:
    """[count, length] int32, rows left-aligned, zero (pad id) elsewhere."""
    out = np.zeros((count, length), np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


class Scorer:
    """A checkpoint ready to score targets given inputs, and to decode greedily."""

    def __init__(self, checkpoint: str | os.PathLike, batch_size: int = 64,
                 partitioner: Partitioner | None = None):
        reader = checkpoint_formats.ParamReader(checkpoint)
        self.step_dir = reader.step_dir
        self.config = convert.network_config(convert.dims_from_t5x(reader.shapes))
        self.model = network.Transformer(self.config)
        self.partitioner = partitioner or Partitioner()
        data_size = self.partitioner.mesh.shape["data"]
        self.batch_size = -(-batch_size // data_size) * data_size  # every data shard gets rows
        shardings = steps.param_shardings(self.model, self.partitioner)
        params = checkpoint_formats.unflatten({name: np.asarray(value, np.float32) for name, value in reader})
        self.params = jax.device_put(params, shardings)
        data = self.partitioner.data_sharding
        self._log_probs = jax.jit(self._sequence_log_probs, in_shardings=(shardings, data, data),
                                  out_shardings=data)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def _sequence_log_probs(self, params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        """Per row: the summed log-probability of its target tokens (pad excluded)."""
        decoder_inputs = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # start token id 0
        logits = self.model.apply({"params": params}, inputs, decoder_inputs, targets, enable_dropout=False)
        per_token, _ = losses.cross_entropy_with_z_loss(logits, targets, 0.0)
        return -jnp.sum(per_token * (targets > 0), axis=-1)

    def _batches(self, count: int) -> range:
        return range(0, count, self.batch_size)

    def log_probs(self, inputs: Sequence[Ids], targets: Sequence[Ids],
                  progress: Callable[[int], Any] | None = None) -> np.ndarray:
        """Summed log p(targets[i] | inputs[i]) for every i (float64 on the host).

        Rows are sorted by length so each batch pads little; `progress(n)` is told of every
        batch of n rows done.
        """
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        order = sorted(range(len(inputs)), key=lambda i: (len(inputs[i]), len(targets[i])))
        scores = np.zeros(len(inputs), np.float64)
        with self.partitioner.activation_context():
            for start in self._batches(len(order)):
                rows = order[start:start + self.batch_size]
                batch_inputs = [inputs[i] for i in rows]
                batch_targets = [targets[i] for i in rows]
                encoded = _pad(batch_inputs, _bucket(max(map(len, batch_inputs))), self.batch_size)
                decoded = _pad(batch_targets, _bucket(max(map(len, batch_targets))), self.batch_size)
                out = jax.device_get(self._log_probs(self.params, encoded, decoded))
                scores[rows] = out[:len(rows)]
                if progress is not None:
                    progress(len(rows))
        return scores

    def greedy_decode(self, inputs: Sequence[Ids], max_length: int,
                      progress: Callable[[int], Any] | None = None) -> list[list[int]]:
        """Greedy generations (ids, no start token, cut at EOS) of at most `max_length` tokens."""
        out: list[list[int]] = [[] for _ in inputs]
        length = _bucket(max(map(len, inputs), default=1))  # one shape per call: decoding compiles slowly
        params = self.params
        with self.partitioner.activation_context():
            for start in self._batches(len(inputs)):
                rows = inputs[start:start + self.batch_size]
                encoded = jax.device_put(_pad(rows, length, self.batch_size),
                                         self.partitioner.data_sharding)
                generated = np.asarray(jax.device_get(
                    decoding.greedy_decode(self.model, params, encoded, max_length).tokens))
                for i in range(len(rows)):
                    ids = generated[i].tolist()
                    out[start + i] = ids[:ids.index(1)] if 1 in ids else ids
                if progress is not None:
                    progress(len(rows))
        return out
