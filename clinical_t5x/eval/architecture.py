"""The model a checkpoint holds, read from its tensor shapes, and its fit to a vocabulary.

Fine-tuning starts from any checkpoint the project reads (its own, `import-hf` output, t5x
Orbax or msgpack), so the architecture is taken from the checkpoint itself rather than from a
gin file that could disagree with it: layer counts from the layer names, sizes from the
kernels, T5 1.1 (gated GELU) from `wi_0`/`wi_1`, T5 1.0 (ReLU, tied head) from `wi` and the
absence of `logits_dense`. Only shapes are read (no tensor), so this is cheap even for Large.
"""
from __future__ import annotations

import os
import re

from clinical_t5x.train.checkpoint_formats import ParamReader

EMBEDDING = "token_embedder/embedding"


class CheckpointMismatch(ValueError):
    """The checkpoint cannot serve this vocabulary (the message names both)."""


def config_fields(shapes: dict[str, tuple[tuple[int, ...], object]]) -> dict[str, object]:
    """`network.T5Config` fields (t5x names) of a t5x-layout parameter tree's shapes."""
    def layers(stack: str) -> int:
        found = {int(m.group(1)) for name in shapes
                 if (m := re.match(rf"{stack}/layers_(\d+)/", name))}
        return max(found) + 1 if found else 0

    vocab, emb = shapes[EMBEDDING][0]
    heads = shapes["encoder/relpos_bias/rel_embedding"][0][0]
    joined = shapes["encoder/layers_0/attention/query/kernel"][0][1]
    gated = "encoder/layers_0/mlp/wi_0/kernel" in shapes
    mlp = shapes["encoder/layers_0/mlp/" + ("wi_0" if gated else "wi") + "/kernel"][0][1]
    return {"vocab_size": vocab, "emb_dim": emb, "num_heads": heads,
            "head_dim": joined // heads, "mlp_dim": mlp,
            "num_encoder_layers": layers("encoder"), "num_decoder_layers": layers("decoder"),
            "mlp_activations": ("gelu", "linear") if gated else ("relu",),
            "logits_via_embedding": "decoder/logits_dense/kernel" not in shapes}


def gin_bindings(fields: dict[str, object]) -> list[str]:
    return [f"network.T5Config.{name} = {value!r}" for name, value in fields.items()]


def check_vocabulary(checkpoint: str | os.PathLike, rows: int, vocabulary) -> None:
    """Refuses a vocabulary with ids past the checkpoint's embedding rows: it cannot be the one
    the checkpoint was trained with. (More rows than ids is normal: tables are padded, and a
    variant's gin may fix the size above its vocabulary's.)"""
    if rows < vocabulary.vocab_size:
        raise CheckpointMismatch(
            f"vocabulary mismatch: {checkpoint} has {rows} embedding rows, the vocabulary in "
            f"{vocabulary.directory} has {vocabulary.vocab_size} ids; pass the vocabulary the "
            f"checkpoint was trained with")


def read(checkpoint: str | os.PathLike, vocabulary) -> dict[str, object]:
    """The checkpoint's `T5Config` fields, after checking it fits `vocabulary`."""
    fields = config_fields(ParamReader(checkpoint).shapes)
    check_vocabulary(checkpoint, int(fields["vocab_size"]), vocabulary)
    return fields
