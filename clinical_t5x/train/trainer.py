"""The built-in trainer: `python -m clinical_t5x.train --gin_file=... --gin.NAME=VALUE`.

t5x's flags and run macros (MODEL_DIR, TRAIN_STEPS, BATCH_SIZE, TASK_FEATURE_LENGTHS,
MIXTURE_OR_TASK_NAME, ...) on this package's JAX model, steps and checkpoints. What makes a
run survive preemption:

* the run resumes by itself from the newest complete checkpoint in MODEL_DIR (parameters,
  optimiser state, step, and each host's input-pipeline position), so a restarted run sees
  exactly the batches and dropout keys the interrupted one would have seen;
* SIGTERM (TPU preemption) on any host finishes the current step, and at a step every host
  agrees on (`clinical_t5x.train.preemption`) writes a checkpoint and exits 143;
* a complete checkpoint that cannot be read stops the run (exit 4) instead of resuming from
  an older one;
* a non-finite loss stops the run before the bad state can be saved.

Data: each host reads only its shards of the SeqIO task (`seqio.ShardInfo`) with a fixed
seed, packs with `EncDecFeatureConverter(pack=True)` and feeds its rows of the global batch.
The data stream is cut into `data_shards` fixed shards (default: one per host); a host that
owns several concatenates their batches, so the global batch does not depend on how many
hosts share the work. TensorFlow/SeqIO are imported lazily (gin setup, data functions), so
importing this module stays light and the model/step code never needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gin

from clinical_t5x import owner_only

log = logging.getLogger("clinical_t5x.train")

EXIT_OK = 0
EXIT_NONFINITE = 3
EXIT_RESTORE_FAILED = 4
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a scheduler expects of a terminated job


# ----------------------------------------------------------------------------- flags / gin


def default_gin_search_paths() -> list[str]:
    """Folders that hold the project's `gin/` folder, wherever this install keeps it: the
    repository root (checkouts, editable installs) or `<prefix>/share/clinical_t5x` (data files
    of a wheel). Gin files name each other root-relative (`include 'gin/variants/base.gin'`),
    the same convention real t5x resolves from the project root, so one `--gin_file=gin/...`
    form serves both trainers (gin/README.md)."""
    repository = Path(__file__).resolve().parents[2]
    candidates = (repository, Path(sys.prefix) / "share" / "clinical_t5x")
    return [str(p) for p in candidates if (p / "gin").is_dir()]


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    """t5x's flags: --gin_file (repeatable), --gin.NAME=VALUE, --gin_bindings, --gin_search_paths."""
    parser = argparse.ArgumentParser(
        prog="clinical-t5x train",
        description="Train with the built-in JAX trainer, configured like t5x with gin. "
                    "Example: --gin_file=gin/builtin/tiny.gin --gin.MODEL_DIR=\"'/tmp/m'\" "
                    "--gin.TRAIN_STEPS=300")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (path, or relative to a search path); repeatable")
    parser.add_argument("--gin_bindings", action="append", default=[],
                        help="gin binding NAME=VALUE; repeatable (or --gin.NAME=VALUE)")
    parser.add_argument("--gin_search_paths", action="append", default=[],
                        help="comma-separated folders searched for gin files and includes "
                             "(the package's gin/ folder is always searched)")
    gin_style, rest = [], []
    for arg in argv:
        if arg.startswith("--gin.") and "=" in arg:
            gin_style.append(arg[len("--gin."):])
        else:
            rest.append(arg)
    args = parser.parse_args(rest)
    args.gin_bindings = gin_style + args.gin_bindings
    if not args.gin_file:
        parser.error("at least one --gin_file is required (e.g. gin/builtin/tiny.gin)")
    return args


def configure_gin(gin_files: Sequence[str], bindings: Sequence[str],
                  search_paths: Sequence[str]) -> None:
    """Registers the configurables, adds search paths, parses files then bindings (t5x order),
    then sets the XLA CPU flags that suit the configured activation dtype and inline CPU
    dispatch (both must be in place before JAX's backend starts, and the dtype is known only
    now)."""
    from clinical_t5x.model import network, optim, partitioning  # noqa: F401 (gin registration)
    from clinical_t5x.train import runtime
    import clinical_t5x.tasks  # noqa: F401 (SeqIO tasks + their gin configurables)

    paths = [p for group in search_paths for p in group.split(",") if p]
    for path in paths + default_gin_search_paths() + [os.getcwd()]:
        gin.add_config_file_search_path(path)
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings))
    runtime.configure_xla_flags(network.T5Config().dtype)
    runtime.configure_cpu_dispatch()


# ----------------------------------------------------------------------------- data


def _shards_of_this_host(data_shards: int | None) -> range:
    import jax

    count = jax.process_count()
    shards = count if data_shards is None else data_shards
    if shards % count:
        raise ValueError(f"data_shards={shards} must be a multiple of the {count} processes")
    per_host = shards // count
    return range(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def make_dataset(task_name: str, feature_lengths: Mapping[str, int], split: str,
                 host_batch_size: int, shards: range, num_shards: int, seed: int,
                 shuffle: bool):
    """This host's packed, batched `tf.data.Dataset` (endless) of `split`."""
    import seqio
    import tensorflow as tf

    if host_batch_size % len(shards):
        raise ValueError(f"batch of {host_batch_size} rows per host does not split over "
                         f"{len(shards)} data shards")
    parts = [
        seqio.get_dataset(task_name, dict(feature_lengths),
                          seqio.EncDecFeatureConverter(pack=True), dataset_split=split,
                          shuffle=shuffle, num_epochs=None, seed=seed, verbose=False,
                          shard_info=seqio.ShardInfo(index=i, num_shards=num_shards),
                          batch_size=host_batch_size // len(shards))
        for i in shards
    ]
    if len(parts) == 1:
        return parts[0]
    return tf.data.Dataset.zip(tuple(parts)).map(
        lambda *batches: {k: tf.concat([b[k] for b in batches], axis=0) for k in batches[0]})


def has_split(task_name: str, split: str) -> bool:
    import seqio

    return split in seqio.get_mixture_or_task(task_name).splits


def task_vocabulary(task_name: str):
    import seqio

    return seqio.get_mixture_or_task(task_name).output_features["targets"].vocabulary


# ----------------------------------------------------------------------------- training


def _host_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    import jax

    return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}


@functools.cache
def _finite_check():
    import jax
    import jax.numpy as jnp

    return jax.jit(lambda leaves: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])))


def _all_finite(tree: Any) -> bool:
    """One fused reduction over every leaf (run only before a save: cheap next to writing)."""
    import jax

    return bool(_finite_check()(jax.tree.leaves(tree)))


def _evaluate(eval_fn, params, dataset, eval_steps: int, partitioner) -> dict[str, float]:
    """Mean eval metrics over the first `eval_steps` validation batches (same ones each time);
    accuracy weighted by target tokens."""
    from clinical_t5x.model import partitioning

    batches = []
    for local in dataset.take(eval_steps).as_numpy_iterator():
        batch = partitioning.global_batch_from_local(local, partitioner.data_sharding)
        batches.append(_host_metrics(eval_fn(params, batch)))
    if not batches:
        log.warning("the validation split gave no batch (an empty source in a mixture ends "
                    "its stream): no evaluation")
        return {}
    tokens = sum(b["num_target_tokens"] for b in batches)
    out = {k: sum(b[k] for b in batches) / len(batches) for k in batches[0]}
    out["accuracy"] = sum(b["accuracy"] * b["num_target_tokens"] for b in batches) / max(tokens, 1)
    return out


def _initial_params(state, init_checkpoint: str, known_rows: int | None, task_name: str,
                    shardings) -> Any:
    """Parameters read from `init_checkpoint`, DEID-tag rows the source lacks initialised
    from their word pieces (rows `import-hf` recorded as trained are kept), placed in this
    model's shards."""
    import jax
    import numpy as np

    from clinical_t5x.train import checkpoint_formats, init_from

    if not Path(init_checkpoint).exists() and "://" not in init_checkpoint:
        raise FileNotFoundError(
            f"INIT_CHECKPOINT {init_checkpoint} does not exist; import one with "
            f"`clinical-t5x import-hf` and pass --gin.INIT_CHECKPOINT=\"'DIR'\"")
    vocabulary = task_vocabulary(task_name)
    tag_ids = getattr(vocabulary, "tag_ids", {})
    pieces = init_from.tag_piece_ids(tag_ids, vocabulary.encode)
    trained = init_from.trained_tag_ids(init_checkpoint)
    if trained:
        log.info("%s: DEID tag rows %s were trained by the source model and are kept",
                 init_checkpoint, sorted(trained))
        pieces = {tag_id: ids for tag_id, ids in pieces.items() if tag_id not in trained}
    host = init_from.init_params(state.params, checkpoint_formats.read_params(init_checkpoint),
                                 known_rows, pieces)
    log.info("initialised parameters from %s", init_checkpoint)
    return jax.tree.map(
        lambda value, sharding: jax.make_array_from_callback(
            value.shape, sharding, lambda index: np.asarray(value[index])),
        host, shardings)


def _datasets(task_name: str, feature_lengths: Mapping[str, int], batch_size: int,
              data_shards: int | None, seed: int, eval_period: int):
    """This host's checkpointable train iterator and (when evaluating) validation dataset."""
    import jax
    from clu.data.dataset_iterator import TfDatasetIterator

    if batch_size % jax.process_count():
        raise ValueError(f"BATCH_SIZE={batch_size} must divide over {jax.process_count()} hosts")
    host_batch = batch_size // jax.process_count()
    shards = _shards_of_this_host(data_shards)
    num_shards = len(shards) * jax.process_count()
    train_ds = make_dataset(task_name, feature_lengths, "train", host_batch, shards, num_shards,
                            seed, shuffle=True)
    eval_ds = None
    if eval_period and has_split(task_name, "validation"):
        eval_ds = make_dataset(task_name, feature_lengths, "validation", host_batch, shards,
                               num_shards, seed, shuffle=False)
    elif eval_period:
        log.warning("%s has no validation split: no evaluation", task_name)
    return TfDatasetIterator(train_ds, checkpoint=True), eval_ds


def _initial_state(model, optimizer, partitioner, ckpt, rng, init_checkpoint: str | None,
                   init_known_vocab_rows: int | None, task_name: str):
    """The newest complete checkpoint's state (data position included), else a fresh one,
    with parameters from `init_checkpoint` when given."""
    from clinical_t5x.train import checkpoints
    from clinical_t5x.model import steps

    state = steps.init_train_state(model, optimizer, partitioner, None, rng)
    restored = ckpt.restore(state)
    if restored is not None:
        log.info("resumed from %s", checkpoints.step_dir(ckpt.model_dir, restored[1]))
        return restored[0]
    if init_checkpoint:
        shardings = steps.train_state_shardings(model, optimizer, partitioner).params
        state = state.replace(params=_initial_params(
            state, init_checkpoint, init_known_vocab_rows, task_name, shardings))
    return state


@dataclasses.dataclass
class TrainResult:
    step: int
    exit_code: int
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]


@gin.configurable(module="clinical_t5x.train", denylist=["stop_flag"])
@owner_only.private_umask()
def train(*, model_dir: str = gin.REQUIRED, train_steps: int = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED, init_checkpoint: str | None = None,
          init_known_vocab_rows: int | None = None, num_microbatches: int | None = None,
          z_loss: float = 1e-4, eval_period: int = 1000, eval_steps: int = 20,
          checkpoint_period: int = 1000, keep_checkpoints: int | None = None,
          log_period: int = 100, data_shards: int | None = None, data_seed: int = 0,
          model_seed: int = 0, peak_flops_per_device: float | None = None,
          stop_check_period: int = 10,
          stop_flag: preemption.StopFlag | None = None) -> TrainResult:
    """Trains to `train_steps` (absolute, like t5x), resuming from MODEL_DIR's checkpoints.

    `init_known_vocab_rows`: how many leading vocabulary ids the INIT_CHECKPOINT was trained
    with (32,100 for T5-Base and SciFive); tag rows past it start from their word pieces.
    `stop_check_period`: on several hosts, how often (steps) they agree whether any of them got
    SIGTERM (`clinical_t5x.train.preemption`). Everything written is owner-only (umask).
    """
    import jax

    from clinical_t5x.model import flops, network, optim, partitioning, steps
    from clinical_t5x.train import checkpoints, preemption, summaries

    should_stop = preemption.StopAgreement(stop_flag or preemption.StopFlag(), stop_check_period)
    config = network.T5Config()
    vocabulary = task_vocabulary(mixture_or_task_name)
    if config.vocab_size < vocabulary.vocab_size:
        raise ValueError(f"network.T5Config.vocab_size={config.vocab_size} is smaller than the "
                         f"{vocabulary.vocab_size} ids of {mixture_or_task_name}'s vocabulary")
    model = network.Transformer(config)
    optimizer = optim.make_optimizer()
    partitioner = partitioning.Partitioner()
    train_iter, eval_ds = _datasets(mixture_or_task_name, task_feature_lengths, batch_size,
                                    data_shards, data_seed, eval_period)
    key = jax.random.PRNGKey(model_seed)
    ckpt = checkpoints.Checkpointer(model_dir, keep=keep_checkpoints, data_iterator=train_iter)
    state = _initial_state(model, optimizer, partitioner, ckpt, jax.random.fold_in(key, 0),
                           init_checkpoint, init_known_vocab_rows, mixture_or_task_name)
    step = int(jax.device_get(state.step))

    train_step = steps.make_train_step(model, optimizer, partitioner, num_microbatches, z_loss)
    eval_step = steps.make_eval_step(model, partitioner, z_loss)
    dropout_key = jax.random.fold_in(key, 1)
    lengths = dict(task_feature_lengths)
    progress = summaries.Progress(
        step, train_steps, batch_size, lengths,
        flops_per_step=batch_size * flops.training_flops_per_example(
            config, lengths["inputs"], lengths["targets"]),
        peak_flops=(peak_flops_per_device * jax.device_count() if peak_flops_per_device
                    else summaries.peak_flops_total()))
    train_writer, eval_writer = summaries.create_writers(model_dir, mixture_or_task_name)
    log.info("training %s from step %d to %d (batch %d, %d devices, %d processes)",
             mixture_or_task_name, step, train_steps, batch_size, jax.device_count(),
             jax.process_count())

    history: list[dict[str, float]] = []
    unchecked: list[tuple[int, Any]] = []  # device metrics not yet looked at (no sync per step)
    last: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    exit_code = EXIT_OK
    try:
        while step < train_steps:
            batch = partitioning.global_batch_from_local(next(train_iter),
                                                         partitioner.data_sharding)
            state, device_metrics = train_step(state, batch, dropout_key)
            step += 1
            unchecked.append((step, device_metrics))
            final = step == train_steps
            log_now = step % log_period == 0 or final
            eval_now = eval_ds is not None and (step % eval_period == 0 or final)
            save_now = step % checkpoint_period == 0 or final
            stop_now = should_stop(step)
            if not (log_now or eval_now or save_now or stop_now):
                continue
            # Every step since the last look must be finite before anything is saved.
            for done_step, metrics in unchecked:
                host = _host_metrics(metrics)
                if not math.isfinite(host["loss"]):
                    good = ckpt.latest_step()
                    log.error("non-finite loss (%s) at step %d: stopping without saving; the "
                              "last good checkpoint is %s", host["loss"], done_step,
                              "none" if good is None else checkpoints.step_dir(model_dir, good))
                    return TrainResult(done_step, EXIT_NONFINITE, last, eval_metrics)
                history.append(host)
                last = host
            unchecked = []
            if log_now:
                metrics = summaries.mean_metrics(history)
                timing = progress.timing(step)
                train_writer.write_scalars(step, {**metrics, **timing})
                progress.report(step, metrics, timing)
                history = []
            if eval_now:
                eval_metrics = _evaluate(eval_step, state.params, eval_ds, eval_steps,
                                         partitioner)
                eval_writer.write_scalars(step, eval_metrics)
                log.info("eval at step %d: loss/token %.4f, accuracy %.4f", step,
                         eval_metrics.get("loss_per_nonpadding_target_token", math.nan),
                         eval_metrics.get("accuracy", math.nan))
            if save_now or stop_now:
                if not _all_finite(state.params):
                    log.error("parameters after step %d are not finite: stopping without "
                              "saving them", step)
                    return TrainResult(step, EXIT_NONFINITE, last, eval_metrics)
                ckpt.save(state)
            if stop_now:
                log.warning("stopped at step %d on request; checkpoint saved, rerun the same "
                            "command to resume", step)
                exit_code = EXIT_PREEMPTED
                break
    finally:
        ckpt.close()
        train_writer.close()
        eval_writer.close()
    return TrainResult(step=step, exit_code=exit_code, last_metrics=last,
                       eval_metrics=eval_metrics)


# ----------------------------------------------------------------------------- entry point


def setup_logging() -> None:
    """INFO for our modules; quiet for Orbax (a line per file) and gin's search-path misses."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not str(record.msg).startswith(
            ("Path not found", "system_path_file_exists")))


def main(argv: list[str] | None = None) -> int:
    from clinical_t5x.train import checkpoints, preemption, runtime

    runtime.configure_cpu_runtime()
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    setup_logging()
    from clinical_t5x.model import partitioning

    partitioning.initialize_distributed()
    configure_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
    flag = preemption.install_sigterm_handler()
    try:
        result = train(stop_flag=flag)
    except checkpoints.RestoreError as err:
        log.error("%s", err)
        return EXIT_RESTORE_FAILED
    log.info("finished at step %d", result.step)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
