"""Membership-scoring throughput of `clinical-t5x audit`: notes/s for the tiny model on CPU.

Builds a freshly initialised checkpoint of the `tiny` variant's shapes (emb 256, 2+2 layers,
gated GELU, 128/32 lengths) and a synthetic vocabulary, turns synthetic notes into the
audit's span-corrupted chunks (2 chunks x 4 masks per note) and times the batched, jitted
scorer over them after one warm-up batch. Prints notes/s, sequences/s, the device and the CPU
model. Figures taken while other processes share the cores are low.

    python benchmarks/audit_scoring.py --notes 200 --batch-size 64
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import linen as nn

from clinical_t5x.audit import membership
from clinical_t5x.audit.scoring import Scorer
from clinical_t5x.data import deid, synth
from clinical_t5x.model import network
from clinical_t5x.text import span_corruption, vocab, vocab_build
from clinical_t5x.train import checkpoint_formats

INPUTS_LENGTH = 128
MASKS, CHUNKS = 4, 2


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vocabulary = vocab.load(vocab_build.build_synthetic_vocab(root / "vocab", vocab_size=2000))
        config = network.T5Config(vocab_size=vocabulary.model_vocab_size, emb_dim=256, num_heads=4, head_dim=64,
                                  mlp_dim=512, num_encoder_layers=2, num_decoder_layers=2,
                                  mlp_activations=("gelu", "linear"), dropout_rate=0.0)
        params = nn.unbox(network.init_params(network.Transformer(config), jax.random.PRNGKey(0)))
        checkpoint_formats.write_params_checkpoint(jax.device_get(params), root / "model")
        scorer = Scorer(root / "model", args.batch_size)
        chunk = span_corruption.chunk_length_for(INPUTS_LENGTH)
        sentinels = [vocabulary.sentinel_id(i) for i in range(span_corruption.MAX_SENTINELS)]
        texts = deid.replace_list_of_notes(synth.synthetic_notes(args.notes, seed=1))
        pairs = [p for i, text in enumerate(texts)
                 for p in membership.note_examples(vocabulary.encode(text), chunk, CHUNKS, MASKS, 0, i, sentinels,
                                                   vocabulary.eos_id)]
        inputs, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        scorer.log_probs(inputs[:args.batch_size], targets[:args.batch_size])  # compile
        started = time.perf_counter()
        scores = scorer.log_probs(inputs, targets)
        elapsed = time.perf_counter() - started
    assert np.all(np.isfinite(scores))
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; CPU: {cpu_model()}")
    print(f"tiny model, inputs {INPUTS_LENGTH}, {MASKS} masks x up to {CHUNKS} chunks per note, "
          f"batch {args.batch_size}")
    print(f"{args.notes} notes ({len(pairs)} sequences) in {elapsed:.1f} s: "
          f"{args.notes / elapsed:.1f} notes/s, {len(pairs) / elapsed:.0f} sequences/s")


if __name__ == "__main__":
    main()
