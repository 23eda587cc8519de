"""A small canaried corpus and two tiny models on it (trained for many epochs, and freshly
initialised), for the audit's separation tests.

The corpus is the MIMIC-III ECG reports of 2,000 synthetic rows (~180 short notes of ~110
tokens, one or two training chunks each, over ~110 patients): few enough tokens for a tiny model
to see each note ~25 times in a few hundred steps, and enough patients on both sides of the split
for equal member and non-member samples of ~50 notes. Longer notes of every category give the
model too few epochs to remember any single note."""

from __future__ import annotations

from pathlib import Path

import gin

INPUTS_LENGTH = 64
REPEATS = (1, 4, 16, 64)
NOTES = 2000  # synthetic MIMIC-III rows, of which ~10% are ECG reports
CATEGORIES = ("ECG",)
TASK = "mimic3_span_corruption"  # the MIMIC-III notes only
TRAIN_STEPS = 400
MODEL = [
    f"MIXTURE_OR_TASK_NAME='{TASK}'",
    "BATCH_SIZE=16",
    f"TASK_FEATURE_LENGTHS={{'inputs': {INPUTS_LENGTH}, 'targets': 14}}",
    "EVAL_PERIOD=1000000", "CHECKPOINT_PERIOD=200", "train.eval_steps=1", "train.log_period=100",
    "network.T5Config.emb_dim=128", "network.T5Config.num_heads=2", "network.T5Config.head_dim=32",
    "network.T5Config.mlp_dim=256", "network.T5Config.num_encoder_layers=2",
    "network.T5Config.num_decoder_layers=2",
]


def corpus(root: Path, canaries: int = 4, seed: int = 3) -> tuple[Path, Path]:
    """(prepared dir with canaries, vocabulary dir). The vocabulary is built from other
    synthetic notes, never from the canaried ones: a vocabulary that had seen the secrets would
    tokenize them shorter than other candidates, which a model that learned nothing would
    already rank first."""
    from clinical_t5x.data import prepare, synth
    from clinical_t5x.text import vocab_build

    raw = synth.write_synthetic(root / "raw", notes=NOTES, seed=seed)
    prepared = root / "prepared"
    prepare.run(raw["mimic3"], out=prepared, categories=CATEGORIES, validation_fraction=0.3, num_shards=2,
                progress=False, canaries=canaries, canary_repeats=REPEATS, canary_seed=seed)
    vocabulary = vocab_build.build_synthetic_vocab(root / "vocab", vocab_size=600, seed=seed)
    return prepared, vocabulary


def trained_model(root: Path, prepared: Path, vocabulary: Path, steps: int = TRAIN_STEPS) -> Path:
    """MODEL_DIR of the tiny model trained `steps` steps on the prepared notes (many epochs)."""
    from clinical_t5x import demo

    try:
        demo.train_model(root, prepared, vocabulary, steps, MODEL)
    finally:
        gin.clear_config()
    return root / "model"


def fresh_model(root: Path, vocabulary: Path) -> Path:
    """A checkpoint of the same architecture, freshly initialised (nothing learned)."""
    import jax
    from flax import linen as nn

    from clinical_t5x.model import network
    from clinical_t5x.text import vocab
    from clinical_t5x.train import checkpoint_formats, trainer

    bindings = [*MODEL, f"network.T5Config.vocab_size={vocab.load(vocabulary).model_vocab_size}",
                f"MODEL_DIR='{root / 'fresh'}'"]
    try:
        trainer.configure_gin(["gin/builtin/tiny.gin"], bindings, [])
        model = network.Transformer(network.T5Config())
    finally:
        gin.clear_config()
    params = nn.unbox(network.init_params(model, jax.random.PRNGKey(0)))
    checkpoint_formats.write_params_checkpoint(jax.device_get(params), root / "fresh")
    return root / "fresh"
