"""`clinical-t5x demo --out DIR`: the whole flow on synthetic notes, in minutes on a laptop CPU.

Stages, each a small function writing one folder under DIR (and skipped when that folder is
already complete, so an interrupted demo continues where it stopped):

    raw/        synthetic MIMIC-III/IV note files in the real schemas       (synth)
    prepared/   DEID-normalised, split, sharded TFRecords + manifest         (prepare)
    vocab/      a small SentencePiece vocabulary + sentinels + DEID tags     (vocab_build)
    model/      the tiny model trained on the MIMIC span-corruption mixture  (train)

The training stage uses the same tasks (`mimic_span_corruption`) and trainer as a real run,
pointed at the demo's own prepared data and vocabulary; only the model is tiny.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NOTES = 2000
VOCAB_SIZE = 800  # what 2,000 synthetic notes support with a hard piece limit
STEPS = 300


def synthesize(out: Path, notes: int, seed: int) -> Path:
    """Synthetic MIMIC look-alike files under `out/raw`."""
    from clinical_t5x import synth

    raw = out / "raw"
    if not (raw / "NOTEEVENTS.csv.gz").is_file():
        synth.write_synthetic(raw, notes=notes, seed=seed, progress=True)
    return raw


def prepare_notes(out: Path, raw: Path) -> Path:
    """Prepared shards under `out/prepared` (the `clinical-t5x prepare` step)."""
    from clinical_t5x import prepare

    prepared = out / "prepared"
    if not (prepared / "manifest.json").is_file():
        prepare.run(mimic3=raw / "NOTEEVENTS.csv.gz", mimic4_dir=raw / "note", out=prepared,
                    validation_fraction=0.05, num_shards=4, validation_shards=2,
                    overwrite=True)
    return prepared


def build_vocabulary(out: Path, prepared: Path, vocab_size: int, seed: int) -> Path:
    """A cased vocabulary trained on the prepared notes, under `out/vocab`."""
    from clinical_t5x import vocab, vocab_build

    directory = out / "vocab"
    if not (directory / vocab.CONFIG_NAME).is_file():
        vocab_build.build_from_prepared(prepared, directory, vocab_size=vocab_size,
                                        lowercase=False, sample_notes=NOTES, seed=seed)
    return directory


def train_model(out: Path, prepared: Path, vocabulary_dir: Path, steps: int,
                extra_bindings: list[str] | None = None):
    """The tiny variant trained on the demo's data with the built-in trainer (resumes if
    `out/model` holds checkpoints). Returns the trainer's `TrainResult`."""
    import gin

    from clinical_t5x import train, vocab

    model_vocab_size = vocab.load(vocabulary_dir).model_vocab_size
    bindings = [
        f"MODEL_DIR='{out / 'model'}'",
        f"TRAIN_STEPS={steps}",
        "MIXTURE_OR_TASK_NAME='mimic_span_corruption'",
        f"VOCABULARY='{vocabulary_dir}'",
        f"clinical_t5x.tasks.data_dir.path='{prepared}'",
        f"network.T5Config.vocab_size={model_vocab_size}",
        *(extra_bindings or []),
    ]
    gin.clear_config()
    train.configure_gin(["builtin/tiny.gin"], bindings, [])
    return train.train()


def run(out: str | os.PathLike, *, notes: int = NOTES, vocab_size: int = VOCAB_SIZE,
        steps: int = STEPS, seed: int = 0, extra_bindings: list[str] | None = None) -> dict:
    """All stages; returns the folders written and the training result."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)
    print(f"[1/4] synthesising {notes} MIMIC-III notes (+ MIMIC-IV) into {out / 'raw'}",
          file=sys.stderr)
    raw = synthesize(out, notes, seed)
    print(f"[2/4] preparing shards into {out / 'prepared'}", file=sys.stderr)
    prepared = prepare_notes(out, raw)
    print(f"[3/4] building a {vocab_size}-piece vocabulary into {out / 'vocab'}", file=sys.stderr)
    vocabulary_dir = build_vocabulary(out, prepared, vocab_size, seed)
    print(f"[4/4] training the tiny model for {steps} steps into {out / 'model'}",
          file=sys.stderr)
    result = train_model(out, prepared, vocabulary_dir, steps, extra_bindings)
    return {"raw": raw, "prepared": prepared, "vocab": vocabulary_dir, "model": out / "model",
            "train": result}


def main(argv: list[str] | None = None) -> int:
    from clinical_t5x import runtime

    runtime.configure_cpu_runtime()  # before anything heavy: it may re-execute the process
    parser = argparse.ArgumentParser(prog="clinical-t5x demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for every stage's output")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps")
    parser.add_argument("--notes", type=int, default=NOTES, help="synthetic MIMIC-III notes")
    parser.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from clinical_t5x import train

    train.setup_logging()
    os.umask(0o077)  # every stage's output derives from (synthetic stand-ins for) notes
    done = run(args.out, notes=args.notes, vocab_size=args.vocab_size, steps=args.steps,
               seed=args.seed)
    result = done["train"]
    print(f"\ndone: step {result.step}; final train loss/token "
          f"{result.last_metrics.get('loss_per_nonpadding_target_token', float('nan')):.3f}, "
          f"eval loss/token {result.eval_metrics.get('loss_per_nonpadding_target_token', float('nan')):.3f}, "
          f"eval accuracy {result.eval_metrics.get('accuracy', float('nan')):.3f}\n"
          f"checkpoints: {done['model']}  (tensorboard --logdir {done['model']})",
          file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
