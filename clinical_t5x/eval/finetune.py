"""`clinical-t5x finetune {mednli,radqa,clip}`: the paper's downstream protocol, one command.

For each label fraction and seed: fine-tune from `--init` with the built-in trainer
(`gin/builtin/finetune/<task>.gin`: constant-rate Adafactor 1e-4, dropout 0.1), decode the
validation split at every saved checkpoint with the cached decoder, keep the checkpoint with
the best validation metric (`results.PRIMARY`), decode the test split with it. Each run writes
`OUT/runs/<percent>pct_seed<seed>/result.json`, so a rerun of the same command skips finished
runs; the end writes `OUT/results.json`, `OUT/results.md` (mean ± std over seeds) and, with
several fractions, `OUT/data_efficiency.png`.

`--engine t5x` runs the same protocol through real t5x (`python -m t5x.train` with
`gin/finetune_<task>.gin`, which evaluates the validation metrics during training; then
`python -m t5x.eval` on the test split), leaving t5x's own outputs under each run folder.

The model is the checkpoint's (`architecture.read`), and the vocabulary must be the one the
checkpoint was trained with: a mismatch stops before any training.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("clinical_t5x.finetune")

TASKS = ("mednli", "radqa", "clip")
PERCENTS = (1, 5, 10, 25, 100)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clinical-t5x finetune",
        description="Fine-tune and evaluate a checkpoint on MedNLI, RadQA or CLIP (best "
                    "checkpoint on validation, then test; mean ± std over seeds).")
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--init", required=True, help="checkpoint to start from (MODEL_DIR, "
                        "checkpoint_<step>, import-hf output; Orbax or t5x msgpack)")
    parser.add_argument("--vocab", required=True, help="the checkpoint's vocabulary folder")
    parser.add_argument("--data", required=True,
                        help="the task's folder of official files (or a folder holding "
                             "<task>/, as `clinical-t5x synth --downstream` writes)")
    parser.add_argument("--out", required=True, help="output folder (runs, results)")
    share = parser.add_mutually_exclusive_group()
    share.add_argument("--fraction", type=float,
                       help="share of the training labels, e.g. 0.05 (default: all)")
    share.add_argument("--fractions", type=int, nargs="+", metavar="PERCENT",
                       help=f"the data-efficiency curve over these percentages {PERCENTS}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--engine", choices=("builtin", "t5x"), default="builtin")
    parser.add_argument("--steps", type=int, help="training steps per run (gin TRAIN_STEPS)")
    parser.add_argument("--eval_every", type=int,
                        help="steps between checkpoints evaluated on validation (EVAL_PERIOD)")
    parser.add_argument("--batch_size", type=int, help="training batch (gin BATCH_SIZE)")
    parser.add_argument("--decode_batch_size", type=int, default=32,
                        help="rows decoded at once in evaluation")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="builtin: extra gin file read after the task's; t5x: the model "
                             "gin of the checkpoint's architecture (required), read first")
    gin_style = [a[len("--gin."):] for a in argv if a.startswith("--gin.") and "=" in a]
    args = parser.parse_args([a for a in argv if not (a.startswith("--gin.") and "=" in a)])
    args.gin_bindings = gin_style
    args.percents = _percents(parser, args)
    if args.engine == "t5x" and not args.gin_file:
        parser.error("--engine t5x needs the model's gin, e.g. "
                     "--gin_file=t5x/examples/t5/t5_1_0/base.gin")
    return args


def _percents(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    if args.fractions:
        chosen = args.fractions
    elif args.fraction is not None:
        chosen = [round(args.fraction * 100)]
        if abs(args.fraction * 100 - chosen[0]) > 1e-6:
            parser.error(f"--fraction {args.fraction}: must be one of "
                         f"{[p / 100 for p in PERCENTS]}")
    else:
        chosen = [100]
    unknown = sorted(set(chosen) - set(PERCENTS))
    if unknown:
        parser.error(f"label percentages {unknown} are not among the tasks' {PERCENTS}")
    return sorted(set(chosen))


def task_folder(task: str, data: str) -> str:
    """`data` itself, or `data/<task>` when that folder exists (synth --downstream layout)."""
    nested = Path(data) / task
    return str(nested) if nested.is_dir() else data


# ----------------------------------------------------------------------------- built-in


def _bindings(args: argparse.Namespace, percent: int, seed: int, model_dir: Path,
              fields: dict[str, Any]) -> list[str]:
    from clinical_t5x.eval import architecture
    from clinical_t5x.tasks import downstream

    bindings = [f"MODEL_DIR = {str(model_dir)!r}", f"INIT_CHECKPOINT = {args.init!r}",
                f"VOCABULARY = {args.vocab!r}",
                f"MIXTURE_OR_TASK_NAME = {downstream.task_name(args.task, percent)!r}",
                f"DATA_SEED = {seed}", f"train.model_seed = {seed}",
                *architecture.gin_bindings(fields)]
    for flag, macro in (("steps", "TRAIN_STEPS"), ("eval_every", "EVAL_PERIOD"),
                        ("batch_size", "BATCH_SIZE")):
        if getattr(args, flag) is not None:
            bindings.append(f"{macro} = {getattr(args, flag)}")
    return bindings + args.gin_bindings


def _best_checkpoint(task: str, model, seqio_task, model_dir: Path, lengths: dict[str, int],
                     batch: int) -> tuple[int, dict[str, float], Any]:
    """(step, validation metrics, params) of the checkpoint best on validation."""
    from clinical_t5x.eval import predict, results
    from clinical_t5x.train import checkpoint_formats

    best: tuple[int, dict[str, float], Any] | None = None
    validation = predict.split_batches(seqio_task, "validation", lengths, batch)
    for step, step_dir in checkpoint_formats.step_dirs(model_dir):
        params = checkpoint_formats.read_params(step_dir)
        metrics = predict.evaluate(model, params, seqio_task, validation, lengths["targets"])
        log.info("validation at step %d: %s %.2f", step, results.PRIMARY[task],
                 metrics[results.PRIMARY[task]])
        if best is None or metrics[results.PRIMARY[task]] > best[1][results.PRIMARY[task]]:
            best = (step, metrics, params)
    if best is None:
        raise RuntimeError(f"{model_dir}: training saved no checkpoint")
    return best


def run_builtin(args: argparse.Namespace, percent: int, seed: int, model_dir: Path,
                fields: dict[str, Any]) -> dict[str, Any]:
    """Train one (fraction, seed), choose its checkpoint on validation, score the test split."""
    import gin
    import seqio

    from clinical_t5x.eval import predict
    from clinical_t5x.model import network
    from clinical_t5x.train import trainer

    gin.clear_config()
    trainer.configure_gin([f"gin/builtin/finetune/{args.task}.gin", *args.gin_file],
                          _bindings(args, percent, seed, model_dir, fields), [])
    outcome = trainer.train()
    if outcome.exit_code != trainer.EXIT_OK:
        raise RuntimeError(f"training in {model_dir} stopped with exit code {outcome.exit_code}")
    lengths = dict(gin.query_parameter("%TASK_FEATURE_LENGTHS"))
    seqio_task = seqio.get_mixture_or_task(gin.query_parameter("%MIXTURE_OR_TASK_NAME"))
    model = network.Transformer(network.T5Config(dropout_rate=0.0, **fields))
    step, validation, params = _best_checkpoint(args.task, model, seqio_task, model_dir,
                                                lengths, args.decode_batch_size)
    test = predict.evaluate(
        model, params, seqio_task,
        predict.split_batches(seqio_task, "test", lengths, args.decode_batch_size),
        lengths["targets"])
    return {"best_step": step, "validation": validation, "test": test}


# ----------------------------------------------------------------------------- real t5x


def run_t5x(args: argparse.Namespace, percent: int, seed: int, model_dir: Path,
            fields: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate through real t5x's own entry points (subprocesses, project root)."""
    from clinical_t5x.tasks import downstream
    from clinical_t5x.train import trainer

    del fields  # t5x takes the architecture from the variant's model gin
    root = trainer.default_gin_search_paths()[0]
    name = downstream.task_name(args.task, percent)
    common = [f"--gin.MIXTURE_OR_TASK_NAME={name!r}", f"--gin.VOCABULARY={args.vocab!r}",
              *[f"--gin.{b}" for b in args.gin_bindings]]
    train_flags = [*[f"--gin_file={f}" for f in args.gin_file],
                   f"--gin_file=gin/finetune_{args.task}.gin",
                   f"--gin.MODEL_DIR={str(model_dir)!r}", f"--gin.INIT_CHECKPOINT={args.init!r}",
                   f"--gin.RANDOM_SEED={seed}", f"--gin.DATA_SEED={seed}"]
    for flag, macro in (("steps", "TRAIN_STEPS"), ("eval_every", "EVAL_PERIOD"),
                        ("batch_size", "BATCH_SIZE")):
        if getattr(args, flag) is not None:
            train_flags.append(f"--gin.{macro}={getattr(args, flag)}")
    _t5x("t5x.train", train_flags + common, root)
    from clinical_t5x.train import checkpoint_formats

    validation = _t5x_metrics(model_dir / "inference_eval")
    step = max(validation, key=lambda s: validation[s].get(_t5x_primary(args.task), -1.0),
               default=None)
    if step is None:
        raise RuntimeError(f"{model_dir}: t5x wrote no validation metrics")
    test_dir = model_dir / "test_eval"
    best_dir = str(checkpoint_formats.resolve_step_dir(model_dir / f"checkpoint_{step}"))
    _t5x("t5x.eval", [*[f"--gin_file={f}" for f in args.gin_file],
                      "--gin_file=gin/finetune_test.gin", f"--gin.CHECKPOINT_PATH={best_dir!r}",
                      f"--gin.EVAL_OUTPUT_DIR={str(test_dir)!r}", *common], root)
    test = _t5x_metrics(test_dir)
    return {"best_step": step, "validation": validation[step],
            "test": test[max(test)] if test else {}}


def _t5x_primary(task: str) -> str:
    from clinical_t5x.eval import results

    return results.PRIMARY[task]


def _t5x(module: str, flags: list[str], root: str) -> None:
    command = [sys.executable, "-m", module, *flags]
    log.info("running python -m %s in %s", module, root)
    done = subprocess.run(command, cwd=root, check=False)
    if done.returncode:
        raise RuntimeError(f"python -m {module} exited with {done.returncode}")


def _t5x_metrics(folder: Path) -> dict[int, dict[str, float]]:
    """{step: metrics} from the `<task>-metrics.jsonl` files seqio's JSONLogger writes under
    t5x's `inference_eval/`: one JSON object a line, `step` and the task's metric_fns keys
    (`f1/<label>` included, named as the built-in engine names them); text metrics are
    skipped, the `<task>-<step>.jsonl` decoded outputs beside them are not read."""
    found: dict[int, dict[str, float]] = {}
    for path in sorted(folder.rglob("*-metrics.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            step = int(record.pop("step"))
            found.setdefault(step, {}).update(
                {k: float(v) for k, v in record.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return found


# ----------------------------------------------------------------------------- driver


def _eta(done: int, total: int, started: float) -> str:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done) if done else float("nan")
    return f"elapsed {elapsed / 60:.1f} min, ETA {left / 60:.1f} min"


def run(args: argparse.Namespace) -> dict[str, Path]:
    """Every (fraction, seed) run not already finished, then the results files."""
    from clinical_t5x import owner_only
    from clinical_t5x.eval import architecture, results
    from clinical_t5x.tasks import downstream
    from clinical_t5x.text import vocab as vocab_lib

    fields = architecture.read(args.init, vocab_lib.load(args.vocab))
    os.environ[downstream.DIR_ENVS[args.task]] = task_folder(args.task, args.data)
    out = owner_only.make_dir(args.out)
    plan = [(p, s) for p in args.percents for s in args.seeds]
    engine = run_builtin if args.engine == "builtin" else run_t5x
    runs, started, trained = [], time.monotonic(), 0
    for index, (percent, seed) in enumerate(plan, 1):
        model_dir = owner_only.make_dir(out / "runs" / f"{percent}pct_seed{seed}")
        record_path = model_dir / "result.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            log.info("run %d/%d (%d%% labels, seed %d): already finished", index, len(plan),
                     percent, seed)
        else:
            log.info("run %d/%d: %d%% of the %s labels, seed %d", index, len(plan), percent,
                     args.task, seed)
            record = {"task": args.task, "percent": percent, "seed": seed,
                      **engine(args, percent, seed, model_dir, fields)}
            with owner_only.open_file(record_path, "w") as handle:
                handle.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
            trained += 1
            log.info("run %d/%d done: best step %d, test %s %.2f; %s", index, len(plan),
                     record["best_step"], results.PRIMARY[args.task],
                     record["test"].get(results.PRIMARY[args.task], float("nan")),
                     _eta(trained, trained + len(plan) - index, started))
        runs.append(record)
    return results.write(out, args.task, runs, with_plot=len(args.percents) > 1)


def main(argv: list[str] | None = None) -> int:
    from clinical_t5x.train import runtime

    runtime.configure_cpu_runtime()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from clinical_t5x.train import trainer

    trainer.setup_logging()
    os.umask(0o077)  # fine-tuned weights and decoded outputs derive from credentialed notes
    from clinical_t5x.data.downstream import DownstreamDataError
    from clinical_t5x.eval.architecture import CheckpointMismatch
    from clinical_t5x.train.checkpoint_formats import CheckpointFormatError

    try:
        written = run(args)
    except (CheckpointMismatch, CheckpointFormatError, DownstreamDataError,
            FileNotFoundError) as err:
        print(f"clinical-t5x finetune: {err}", file=sys.stderr)
        return 2
    for path in written.values():
        print(path)
    return 0
