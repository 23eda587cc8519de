"""`clinical-t5x demo --out DIR`: the whole flow on synthetic notes, in minutes on a laptop CPU.

Stages, each a small function writing one folder under DIR (and skipped when that folder is
already complete, so an interrupted demo continues where it stopped):

    raw/        synthetic MIMIC-III/IV note files in the real schemas       (synth)
    prepared/   DEID-normalised, split, sharded TFRecords + manifest         (prepare)
    vocab/      a small SentencePiece vocabulary + sentinels + DEID tags     (vocab_build)
    model/      the tiny model trained on the MIMIC span-corruption mixture  (train)
    hf/         its newest checkpoint as a Hugging Face T5 folder           (export)
    finetune_<task>/  with `--finetune mednli`: that model fine-tuned and scored on
                synthetic benchmark files written to downstream/          (finetune)

It ends by loading hf/ through `transformers` and showing the model filling the sentinels of
one synthetic note (`fill_in`); that needs torch (`pip install -e '.[hf]'`).

The training stage uses the same tasks (`mimic_span_corruption`) and trainer as a real run,
pointed at the demo's own prepared data and vocabulary; only the model is tiny.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from pathlib import Path

from clinical_t5x import owner_only

NOTES = 2000
VOCAB_SIZE = 800  # what 2,000 synthetic notes support with a hard piece limit
STEPS = 300
HF_INSTALL_HINT = "pip install -e '.[hf]'"


def synthesize(out: Path, notes: int, seed: int) -> Path:
    """Synthetic MIMIC look-alike files under `out/raw`."""
    from clinical_t5x.data import synth

    raw = out / "raw"
    # write_synthetic writes its three files one by one (each atomically): all must exist, or
    # a demo killed after the first would go on without the MIMIC-IV notes.
    files = (raw / "NOTEEVENTS.csv.gz", raw / "note" / "discharge.csv.gz",
             raw / "note" / "radiology.csv.gz")
    if not all(path.is_file() for path in files):
        synth.write_synthetic(raw, notes=notes, seed=seed, progress=True)
    return raw


def prepare_notes(out: Path, raw: Path) -> Path:
    """Prepared shards under `out/prepared` (the `clinical-t5x prepare` step)."""
    from clinical_t5x.data import prepare

    prepared = out / "prepared"
    if not (prepared / "manifest.json").is_file():
        prepare.run(mimic3=raw / "NOTEEVENTS.csv.gz", mimic4_dir=raw / "note", out=prepared,
                    validation_fraction=0.05, num_shards=4, validation_shards=2,
                    overwrite=True)
    return prepared


def build_vocabulary(out: Path, prepared: Path, vocab_size: int, seed: int) -> Path:
    """A cased vocabulary trained on the prepared notes, under `out/vocab`."""
    from clinical_t5x.text import vocab, vocab_build

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

    from clinical_t5x.train import trainer as train

    from clinical_t5x.text import vocab

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
    train.configure_gin(["gin/builtin/tiny.gin"], bindings, [])
    return train.train()


def export_model(out: Path, model_dir: Path, vocabulary_dir: Path) -> Path:
    """The newest checkpoint as an HF folder `out/hf`. Skipped when the folder's model card
    already names that checkpoint (export writes the card last); a partial or older export is
    replaced, so a resumed, longer run exports its new checkpoint."""
    from clinical_t5x.train import checkpoint_formats
    from clinical_t5x.hf import convert as hf, model_card

    directory = out / "hf"
    step_dir = checkpoint_formats.resolve_step_dir(model_dir)
    card = directory / "README.md"
    if card.is_file() and f"`{model_card.relative_path(step_dir, directory)}`" in card.read_text():
        return directory
    if directory.exists():
        shutil.rmtree(directory)
    return hf.export(step_dir, vocabulary_dir, directory, show_progress=True)


def torch_available() -> bool:
    """Whether the `hf` extra (torch, which runs the exported model) is installed. Imported,
    not just looked up: the fill-in imports it next anyway."""
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def show_fill_in(hf_dir: Path, model_dir: Path, seed: int):
    """Print the exported model's fill-in of a synthetic note and return it (a
    `fill_in.FillIn`); without torch, print how to install it and return None."""
    if not torch_available():
        print(f"torch is not installed: `{HF_INSTALL_HINT}` to see the model fill in a note",
              file=sys.stderr)
        return None
    from clinical_t5x.hf import fill_in

    result = fill_in.fill_in(hf_dir, model_dir, seed)
    print(fill_in.report(result, hf_dir), file=sys.stderr)
    return result


@owner_only.private_umask()
def run(out: str | os.PathLike, *, notes: int = NOTES, vocab_size: int = VOCAB_SIZE,
        steps: int = STEPS, seed: int = 0, extra_bindings: list[str] | None = None) -> dict:
    """All stages; returns the folders written, the training result and the fill-in. A
    training run that stops early (preempted) ends the demo there, without an export."""
    stages = 6
    out = owner_only.make_dir(Path(out).absolute())
    print(f"[1/{stages}] synthesising {notes} MIMIC-III notes (+ MIMIC-IV) into {out / 'raw'}",
          file=sys.stderr)
    raw = synthesize(out, notes, seed)
    print(f"[2/{stages}] preparing shards into {out / 'prepared'}", file=sys.stderr)
    prepared = prepare_notes(out, raw)
    print(f"[3/{stages}] building a {vocab_size}-piece vocabulary into {out / 'vocab'}",
          file=sys.stderr)
    vocabulary_dir = build_vocabulary(out, prepared, vocab_size, seed)
    print(f"[4/{stages}] training the tiny model for {steps} steps into {out / 'model'}",
          file=sys.stderr)
    result = train_model(out, prepared, vocabulary_dir, steps, extra_bindings)
    done = {"raw": raw, "prepared": prepared, "vocab": vocabulary_dir, "model": out / "model",
            "train": result, "hf": None, "fill_in": None}
    if result.exit_code != 0:
        return done
    print(f"[5/{stages}] exporting the newest checkpoint to {out / 'hf'}", file=sys.stderr)
    done["hf"] = export_model(out, out / "model", vocabulary_dir)
    print(f"[6/{stages}] filling in the sentinels of a synthetic note with transformers",
          file=sys.stderr)
    done["fill_in"] = show_fill_in(done["hf"], out / "model", seed)
    return done


def finetune_stage(out: Path, vocabulary_dir: Path, task: str, steps: int, seed: int) -> Path:
    """The trained model fine-tuned on synthetic `task` files (`clinical-t5x finetune`, one
    seed); returns its results table. Finished runs are kept, like every other stage."""
    from clinical_t5x.data import synth_downstream
    from clinical_t5x.eval import finetune

    data = out / "downstream"
    if not (data / task).is_dir():
        synth_downstream.write_downstream(data, seed=seed)
    args = finetune.parse_args([
        task, "--init", str(out / "model"), "--vocab", str(vocabulary_dir), "--data", str(data),
        "--out", str(out / f"finetune_{task}"), "--seeds", str(seed + 1), "--steps", str(steps),
        "--eval_every", str(max(1, steps // 2)), "--batch_size", "16",
        # The demo's small vocabulary splits labels finely ("entailment": 8 pieces), past the
        # task's 8 target tokens, which fit T5's vocabulary.
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 16}"])
    return finetune.run(args)["md"]


def _metrics_summary(result) -> str:
    """Final train/eval figures, or a note that this run resumed an already finished one."""
    if not result.last_metrics and not result.eval_metrics:
        return "training was already complete (no new steps)"
    loss = "loss_per_nonpadding_target_token"
    return (f"final train loss/token {result.last_metrics.get(loss, float('nan')):.3f}, "
            f"eval loss/token {result.eval_metrics.get(loss, float('nan')):.3f}, "
            f"eval accuracy {result.eval_metrics.get('accuracy', float('nan')):.3f}")


def main(argv: list[str] | None = None) -> int:
    from clinical_t5x.train import runtime

    runtime.configure_cpu_runtime()  # before anything heavy: it may re-execute the process
    parser = argparse.ArgumentParser(prog="clinical-t5x demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for every stage's output")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps")
    parser.add_argument("--notes", type=int, default=NOTES, help="synthetic MIMIC-III notes")
    parser.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune", choices=("mednli",),
                        help="then fine-tune the model on synthetic files of this benchmark")
    parser.add_argument("--finetune_steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    from clinical_t5x.train import trainer as train

    train.setup_logging()
    done = run(args.out, notes=args.notes, vocab_size=args.vocab_size, steps=args.steps,
               seed=args.seed)
    result = done["train"]
    print(f"\ndone: step {result.step}; {_metrics_summary(result)}\n"
          f"checkpoints: {done['model']}  (tensorboard --logdir {done['model']})",
          file=sys.stderr)
    if done["hf"] is not None:
        print(f"Hugging Face model: {done['hf']}  (loads with AutoModelForSeq2SeqLM and "
              f"AutoTokenizer .from_pretrained; one trained on real notes falls under the "
              f"PhysioNet credentialed licence, so never share it: see its README.md)",
              file=sys.stderr)
    if args.finetune and result.exit_code == 0:
        print(f"[+] fine-tuning on synthetic {args.finetune} for {args.finetune_steps} steps",
              file=sys.stderr)
        table = finetune_stage(Path(args.out).absolute(), done["vocab"], args.finetune,
                               args.finetune_steps, args.seed)
        print(table.read_text(), file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
