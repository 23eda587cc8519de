"""The named model shapes of the benchmarks, defined once: "tiny" means the same model in every
benchmark and in docs/performance.md.

All are T5 1.1 (gated GELU, separate output head, 32 relative-position buckets). "small",
"base" and "large" are the published T5 1.1 sizes; "tiny" is the CPU benchmark model; "micro"
is a smoke-test model for the tests. Each comes with the batch and lengths it is timed at.
The benchmark's "tiny" is bigger than the demo model of `gin/variants/tiny.gin` (2 + 2 layers,
MLP 512, 128/32 tokens), which is sized for a few-minute CPU demo, not for timing.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    emb_dim: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    num_layers: int  # encoder and decoder each
    vocab_size: int
    batch_size: int
    inputs_length: int
    targets_length: int

    @property
    def tokens_per_step(self) -> int:
        """The one tokens/s definition: every input and target token of the batch."""
        return self.batch_size * (self.inputs_length + self.targets_length)


SIZES: dict[str, BenchConfig] = {
    "micro": BenchConfig(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_layers=1,
                         vocab_size=256, batch_size=2, inputs_length=16, targets_length=8),
    "tiny": BenchConfig(emb_dim=256, num_heads=4, head_dim=64, mlp_dim=1024, num_layers=4,
                        vocab_size=8192, batch_size=16, inputs_length=256, targets_length=64),
    "small": BenchConfig(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_layers=8,
                         vocab_size=32128, batch_size=8, inputs_length=512, targets_length=114),
    "base": BenchConfig(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, num_layers=12,
                        vocab_size=32128, batch_size=32, inputs_length=512, targets_length=114),
    "large": BenchConfig(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816, num_layers=24,
                         vocab_size=32128, batch_size=32, inputs_length=512, targets_length=114),
}


def t5_config(size: str, dtype: str = "float32", dropout_rate: float = 0.0):
    """The built-in trainer's `network.T5Config` for a named size."""
    from clinical_t5x.model import network

    c = SIZES[size]
    return network.T5Config(
        vocab_size=c.vocab_size, dtype=dtype, emb_dim=c.emb_dim, num_heads=c.num_heads,
        num_encoder_layers=c.num_layers, num_decoder_layers=c.num_layers, head_dim=c.head_dim,
        mlp_dim=c.mlp_dim, mlp_activations=("gelu", "linear"), dropout_rate=dropout_rate,
        logits_via_embedding=False)


def hf_dims(size: str):
    """The exporter's `Dims` (Hugging Face / t5x checkpoint sizes) for a named size."""
    from clinical_t5x.hf import convert

    c = SIZES[size]
    return convert.Dims(vocab_size=c.vocab_size, d_model=c.emb_dim, d_kv=c.head_dim,
                        d_ff=c.mlp_dim, num_heads=c.num_heads, num_layers=c.num_layers,
                        num_decoder_layers=c.num_layers, num_buckets=32, gated=True,
                        tied=False)


def hf_model(size: str, attn_implementation: str | None = None):
    """A randomly initialised `T5ForConditionalGeneration` of a named size, with its own output
    head like the built-in model (transformers 5 ties the head to the embedding even when the
    config says untied)."""
    import torch
    import transformers

    from clinical_t5x.hf import convert

    config = transformers.T5Config.from_dict(convert.hf_config(hf_dims(size), dropout_rate=0.0))
    model = transformers.T5ForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation)
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model
