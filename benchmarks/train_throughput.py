"""Training throughput of the built-in trainer against Hugging Face PyTorch and t5x, fairly.

    python benchmarks/train_throughput.py --size tiny        # CPU: defaults and tuned rows
    python benchmarks/train_throughput.py --size small --engines jax,torch,torch_compile
    python benchmarks/train_throughput.py --size base --dtype bf16 --settings tuned  # GPU: MFU

What "fair" means here:
- Every engine runs in its own subprocess (so peak RSS is per engine), pinned to the same
  --threads cores and told to use that many threads (XLA sizes its pool from the affinity;
  torch from torch.set_num_threads and OMP/MKL_NUM_THREADS).
- "defaults": nothing set for any engine (no allocator settings, no XLA flags).
  "tuned": the allocator settings of `clinical_t5x.train.runtime` for EVERY engine, plus each
  engine's own best settings (XLA, for the built-in step and t5x alike: on CPU
  `runtime.xla_cpu_flags(dtype)` and inline dispatch; torch: SDPA attention).
- One dtype policy: fp32 = float32 throughout; bf16 = bfloat16 activations, float32
  parameters and losses (built-in: `T5Config.dtype`; torch: `torch.autocast`). On GPU TF32 is
  allowed for both engines' float32 matmuls.
- Untimed warm-up steps (XLA compilation, first allocations, torch.compile's recompiles),
  then --repeats timed repeats of --steps steps each: min / median / max seconds per step.
- Interleaved: on CPU the engines of one dtype and settings row are alive together and take
  turns, one timed repeat each per round (the order rotating from round to round, a short
  pause before each), so a change in the machine's load over the run reaches every engine
  alike. The speed-up is the median over rounds of the per-round ratio, with its range. On
  an accelerator the engines run one after another (each would claim the device's memory).
- tokens/s = batch x (inputs + targets) / median step time.
- Model FLOPs = `clinical_t5x.model.flops.training_flops_per_example`, the trainer's MFU count.
  MFU on GPU/TPU is against the chip's dense bf16 peak (`flops.device_peak_flops`); on CPU
  the "matmul" column is the rate the same engine reaches on a 1024^3 matmul in the same dtype
  and process settings, and "of matmul" is the model FLOP/s as a fraction of it. The rate is
  the best of short bursts, one after each of the engine's timed repeats while the others
  wait: a single burst at the end once caught a slow moment of a shared machine and printed
  an MFU above 100%.
- t5x: real t5x's own train step (`t5x_worker`) on the same shapes and random batch, no
  SeqIO task needed; its row says "skipped" with the reason when t5x does not import.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, NamedTuple

import configs  # benchmarks/configs.py: the named model sizes
import proc_status  # benchmarks/proc_status.py: this process's memory figures

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
ENGINES = ("jax", "torch", "torch_compile", "t5x")
XLA_ENGINES = ("jax", "t5x")  # engines that run on XLA and so take its flags
SETTINGS = ("defaults", "tuned")
# Variables that change an engine's speed; "defaults" runs without any of them.
_TUNING_ENV = ("GLIBC_TUNABLES", "LD_PRELOAD", "XLA_FLAGS", "CLINICAL_T5X_RUNTIME_CONFIGURED")
# Seconds each engine waits before its timed repeat, so that the threads of the engine timed
# just before (PyTorch's OpenMP workers spin after a parallel region) have gone to sleep.
PAUSE_S = 0.5


# ----------------------------------------------------------------------------- parent side


def cpu_model() -> str:
    from clinical_t5x.train import runtime

    cpu = runtime.this_cpu()
    bf16 = sorted(cpu.flags & set(runtime.BF16_MATRIX_FLAGS)) or ["no bf16 matrix unit"]
    return f"{cpu.model} ({cpu.vendor}; {', '.join(bf16)})"


def worker_env(base: dict[str, str], settings: str, engine: str, dtype: str,
               threads: int) -> dict[str, str]:
    """The environment of one worker: same threads for all; tuned = allocator for all plus
    the engine's own flags."""
    from clinical_t5x.train import runtime

    env = {k: v for k, v in base.items() if k not in _TUNING_ENV}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env[runtime.OPT_OUT_ENV] = "1"  # the worker's settings are exactly these, nothing added
    if settings == "tuned":
        env = runtime.cpu_runtime_env(env)
        env.pop("CLINICAL_T5X_RUNTIME_CONFIGURED", None)
        if engine in XLA_ENGINES and runtime.backend_is_cpu(env):
            flags = runtime.xla_cpu_flags(dtype)
            if flags:
                env["XLA_FLAGS"] = " ".join(flags)
    return env


class Worker:
    """One engine, one dtype, one settings row, in its own process, driven over its stdin:
    each "step" line there times one repeat and answers with a JSON line."""

    def __init__(self, args: argparse.Namespace, engine: str, dtype: str, settings: str):
        cmd = [sys.executable, __file__, "--worker", engine, "--worker_dtype", dtype,
               "--worker_settings", settings, "--size", args.size, "--threads",
               str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps)]
        self.row = {"engine": engine, "dtype": dtype, "settings": settings}
        self.step_s: list[float] = []
        self.cpu_s: list[float] = []
        self._stderr = tempfile.TemporaryFile("w+")  # a pipe left unread would fill and block
        self._proc = subprocess.Popen(
            cmd, env=worker_env(dict(os.environ), settings, engine, dtype, args.threads),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.timing = True

    def _ask(self, command: str | None = None) -> dict | None:
        """Sends `command` (if any) and returns the next JSON reply; None once it has exited."""
        try:
            if command:
                self._proc.stdin.write(command + "\n")
                self._proc.stdin.flush()
            for line in self._proc.stdout:
                if line.startswith("{"):
                    return json.loads(line)
        except OSError:  # its stdin closed: the process is gone
            pass
        return None

    def _fail(self) -> None:
        code = self._proc.wait()
        self._stderr.seek(0)
        last = (self._stderr.read().strip().splitlines() or ["no output"])[-1]
        self.row["error"] = f"exit code {code}: {last[:200]}"
        self.timing = False

    def wait_ready(self) -> None:
        """Waits for the build and warm-up; a skipped engine (t5x not installed) ends here."""
        reply = self._ask()
        if reply is None:
            self._fail()
        elif "skipped" in reply:
            self.row.update(reply)
            self.timing = False
        else:
            self.row["warmup_s"] = reply["warmup_s"]

    def time_repeat(self) -> None:
        reply = self._ask("step")
        if reply is None:
            self._fail()
            return
        self.step_s.append(reply["step_s"])
        self.cpu_s.append(reply["cpu_s"])

    def finish(self) -> dict:
        """The row: timings, and the worker's report (FLOPs, matmul rate, peak RSS)."""
        if self.timing:
            report = self._ask("report")
            if report is None:
                self._fail()
            else:
                self.row.update(report, step_s=self.step_s,
                                cpu_s_per_step=statistics.mean(self.cpu_s))
        self._proc.wait()  # it exits after its report, its reason for skipping, or its error
        self._stderr.close()
        return self.row


def run_group(args: argparse.Namespace, engines: list[str], dtype: str, settings: str,
              interleave: bool) -> list[dict]:
    """The rows of one dtype and settings: interleaved round by round (see the module's
    docstring), or one engine after the other."""
    if not interleave:
        return [row for engine in engines
                for row in run_group(args, [engine], dtype, settings, interleave=True)]
    workers = [Worker(args, engine, dtype, settings) for engine in engines]
    for worker in workers:
        worker.wait_ready()
    for round_index in range(args.repeats):
        shift = round_index % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            if worker.timing:
                time.sleep(PAUSE_S)
                worker.time_repeat()
    rows = [worker.finish() for worker in workers]
    for row in rows:
        if "step_s" in row:
            row["interleaved"] = len(workers) > 1
    return rows


def benchmark_dtypes(choice: str) -> list[str]:
    """The activation dtypes to run for --dtype (see its help for "auto")."""
    from clinical_t5x.train import runtime

    if choice == "auto":
        if not runtime.backend_is_cpu():
            choice = "bf16"
        elif runtime.this_cpu().has_bf16_matrix_unit:
            choice = "both"
        else:
            print("bf16 left out: this CPU has no bf16 matrix unit (--dtype both to include it)",
                  file=sys.stderr)
            choice = "fp32"
    return list(DTYPES.values()) if choice == "both" else [DTYPES[choice]]


def summary(times: list[float]) -> tuple[float, float, float]:
    return min(times), statistics.median(times), max(times)


def format_table(rows: list[dict], size: str, threads: int) -> str:
    """The printed report: a header with the machine and definitions, one line per run."""
    cfg = configs.SIZES[size]
    flops_per_step = next((r["flops_per_step"] for r in rows if "flops_per_step" in r), None)
    out = [f"CPU: {cpu_model()}; threads per engine: {threads}",
           f"size {size}: emb {cfg.emb_dim}, {cfg.num_heads}x{cfg.head_dim} heads, MLP "
           f"{cfg.mlp_dim}, {cfg.num_layers}+{cfg.num_layers} layers, vocab {cfg.vocab_size}, "
           f"batch {cfg.batch_size} x {cfg.inputs_length}/{cfg.targets_length}",
           f"tokens/step = batch x (inputs + targets) = {cfg.tokens_per_step:,}"
           + (f"; model FLOPs/step = {flops_per_step:.3e}" if flops_per_step else "")]
    head = (f"{'engine':<14}{'dtype':<9}{'settings':<9}{'device':<18}{'s/step min/med/max':>24}"
            f"{'cpu s':>8}{'tokens/s':>9}{'TFLOP/s':>8}{'matmul':>8}{'MFU':>9}{'RSS GB':>7}")
    out += [head, "-" * len(head)]
    for r in rows:
        label = f"{r['engine']:<14}{r['dtype']:<9}{r['settings']:<9}"
        if "error" in r:
            out.append(f"{label}failed: {r['error']}")
            continue
        if "skipped" in r:
            out.append(f"{label}skipped: {r['skipped']}")
            continue
        low, mid, high = summary(r["step_s"])
        tflops = flops_per_step / mid / 1e12 if flops_per_step else 0.0
        peak = r.get("peak_tflops") or r.get("matmul_tflops")
        mfu = f"{100 * tflops / peak:6.1f}%" if peak else "   n/a"
        matmul = f"{r['matmul_tflops']:8.3f}" if r.get("matmul_tflops") else "       -"
        out.append(f"{label}{r['device'][:17]:<18}{low:8.3f}{mid:8.3f}{high:8.3f}"
                   f"{r['cpu_s_per_step']:8.2f}{cfg.tokens_per_step / mid:9.0f}{tflops:8.3f}"
                   f"{matmul}{mfu:>9}{r['peak_rss_gb']:7.2f}")
    out.append("MFU: on CPU model FLOP/s / the engine's own 1024^3 matmul rate in the same dtype "
               "(the 'matmul' column, TFLOP/s); on GPU/TPU / the chip's dense bf16 peak.")
    speedups = speedup_lines(rows)
    return "\n".join(out + speedups)


def speedup_lines(rows: list[dict]) -> list[str]:
    """Built-in vs each other engine, same dtype and settings: the median of the per-round
    ratios where the two were interleaved, else the ratio of their median step times."""
    ok = {(r["engine"], r["dtype"], r["settings"]): r for r in rows if "step_s" in r}
    lines = []
    for (engine, dtype, settings), row in sorted(ok.items()):
        ours = ok.get(("jax", dtype, settings))
        if engine == "jax" or not ours:
            continue
        of_medians = summary(row["step_s"])[1] / summary(ours["step_s"])[1]
        how = f"ratio of median steps {of_medians:.2f}x"
        ratio = of_medians
        if row.get("interleaved") and ours.get("interleaved"):
            rounds = [theirs / mine for theirs, mine in zip(row["step_s"], ours["step_s"])]
            low, ratio, high = summary(rounds)
            how = (f"median of {len(rounds)} interleaved rounds, range {low:.2f}-{high:.2f}; "
                   + how)
        lines.append(f"built-in vs {engine}, {dtype}, {settings}: {ratio:.2f}x "
                     f"({'faster' if ratio > 1 else 'slower'}; {how})")
    return lines


# ----------------------------------------------------------------------------- worker side


def peak_rss_gb() -> float:
    """This process's own peak resident memory (`VmHWM`). Not `ru_maxrss`, which the workers
    inherit from the driver (proc_status): a driver that had once grown large (a notebook, a
    test run) would put a floor under every engine's figure."""
    return proc_status.kib("VmHWM") / 2 ** 20


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def random_batch(vocab: int, batch: int, inputs: int, targets: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, vocab, (batch, targets)).astype(np.int32)
    return {"encoder_input_tokens": rng.integers(2, vocab, (batch, inputs)).astype(np.int32),
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": np.pad(tgt, ((0, 0), (1, 0)))[:, :-1]}


class Engine(NamedTuple):
    """A built engine in a worker: one training step, a wait for its result, the rest of its
    row (FLOPs, memory), measured after the timed steps, and on CPU one burst of its 1024^3
    matmul rate in TFLOP/s (`matmul`)."""

    run_step: Callable[[], object]
    sync: Callable[[object], object]
    report: Callable[[], dict]
    extra_warmup: int = 0
    matmul: Callable[[], float] | None = None


def serve(args: argparse.Namespace, engine: Engine) -> None:
    """The worker's side of `Worker`: warm up, say so, then per "step" line on stdin time
    --steps steps (wall seconds per step, and CPU seconds per step of all threads: on a shared
    machine wall time partly measures the neighbours), then a matmul burst before replying, so
    the other engines wait for it too; "report" ends it, with the best burst's rate."""
    start = time.perf_counter()
    for _ in range(args.warmup + engine.extra_warmup):
        engine.sync(engine.run_step())
    _reply({"warmup_s": time.perf_counter() - start})
    rates = []
    for command in sys.stdin:
        if command.strip() != "step":
            break
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(args.steps):
            out = engine.run_step()
        engine.sync(out)
        timing = {"step_s": (time.perf_counter() - start) / args.steps,
                  "cpu_s": (_cpu_seconds() - cpu) / args.steps}
        if engine.matmul is not None:
            rates.append(engine.matmul())
        _reply(timing)
    matmul = {"matmul_tflops": max(rates)} if rates else {}
    _reply({**engine.report(), **matmul, "peak_rss_gb": peak_rss_gb()})


def _reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


def best_rate(run, sync, flops: float, budget_s: float = 0.5) -> float:
    """TFLOP/s of the fastest of up to 20 timed runs (after one warm-up run), fewer when one
    run is slow (bf16 without bf16 hardware can take seconds), so it costs about `budget_s`.
    Twenty, not five: a fast matmul (18 ms) times five runs spans too short a window to ride
    out a moment of load on a shared machine (one "small" run measured 0.078 TFLOP/s against
    0.13 to 0.14 in every other)."""
    start = time.perf_counter()
    sync(run())
    reps = max(1, min(20, int(budget_s / max(time.perf_counter() - start, 1e-9))))
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        sync(run())
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e12


def _xla_device():
    """The first JAX device; on GPU float32 matmuls may use TF32, as torch is told too."""
    import jax

    device = jax.devices()[0]
    if device.platform == "gpu":
        jax.config.update("jax_default_matmul_precision", "tensorfloat32")
    return device


def jax_worker(args: argparse.Namespace) -> Engine:
    import jax

    from clinical_t5x.model import network, optim, partitioning, steps

    device = _xla_device()
    cfg = configs.SIZES[args.size]
    config = configs.t5_config(args.size, args.worker_dtype)
    model = network.Transformer(config)
    optimizer = optim.make_optimizer(warmup_steps=10000)
    partitioner = partitioning.Partitioner(num_partitions=1)
    state = steps.init_train_state(model, optimizer, partitioner, None, jax.random.PRNGKey(0))
    step_fn = steps.make_train_step(model, optimizer, partitioner)
    data = partitioning.global_batch_from_local(
        random_batch(cfg.vocab_size, cfg.batch_size, cfg.inputs_length, cfg.targets_length),
        partitioner.data_sharding)
    rng = jax.random.PRNGKey(1)
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = step_fn(holder["state"], data, rng)
        return metrics

    return Engine(run_step, jax.block_until_ready,
                  lambda: _xla_result(args, device, config, holder["state"].params),
                  matmul=_xla_matmul_burst(args.worker_dtype, device))


def _xla_matmul_burst(dtype: str, device) -> Callable[[], float] | None:
    """On CPU, one burst of the 1024^3 matmul rate in the engine's dtype (the MFU ceiling)."""
    if device.platform != "cpu":
        return None
    import jax
    import jax.numpy as jnp

    # float32 results: XLA CPU's fast bf16 kernels (AMX) produce only those, and the built-in
    # network's bf16 products use them (network._bf16_cpu_einsum).
    matmul = jax.jit(functools.partial(jnp.matmul, preferred_element_type=jnp.float32))

    def burst() -> float:  # its operand made per burst, so the timed steps never hold it
        a = jnp.ones((1024, 1024), dtype)
        return best_rate(lambda: matmul(a, a), jax.block_until_ready, 2 * 1024 ** 3)

    return burst


def _xla_result(args: argparse.Namespace, device, config, params) -> dict:
    """The report of an XLA engine (built-in or t5x), besides its timings: the shared FLOP
    count, and off CPU the chip's peak and the device's peak memory."""
    import jax

    from clinical_t5x.model import flops

    cfg = configs.SIZES[args.size]
    result = {"device": f"{device.platform}: {device.device_kind}",
              "threads": len(os.sched_getaffinity(0)),
              "params": sum(x.size for x in jax.tree_util.tree_leaves(params)),
              "flops_per_step": cfg.batch_size * flops.training_flops_per_example(
                  config, cfg.inputs_length, cfg.targets_length),
              "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if device.platform == "cpu":
        return result
    peak = flops.device_peak_flops(device.device_kind)
    result["peak_tflops"] = peak / 1e12 if peak else None
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["device_peak_gb"] = stats["peak_bytes_in_use"] / 2 ** 30
    return result


def torch_worker(args: argparse.Namespace, compiled: bool) -> Engine:
    import torch
    from transformers.optimization import Adafactor

    from clinical_t5x.model import flops

    torch.set_num_threads(args.threads)
    cfg = configs.SIZES[args.size]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.worker_settings == "tuned":
        # Subnormal floats flushed to zero, as XLA's CPU threads do: without it PyTorch's
        # float32 "small" step took 19 s instead of 5 on an Intel Xeon (docs/performance.md).
        torch.set_flush_denormal(True)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default on GPU
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    # "defaults": the library's own choice of attention kernel; "tuned": SDPA.
    model = configs.hf_model(args.size, "sdpa" if args.worker_settings == "tuned" else None)
    model = model.to(device).train()
    optimizer = Adafactor(model.parameters(), lr=1e-2, relative_step=False,
                          scale_parameter=True, warmup_init=False)
    data = {k: torch.from_numpy(v).long().to(device) for k, v in random_batch(
        cfg.vocab_size, cfg.batch_size, cfg.inputs_length, cfg.targets_length).items()}
    forward = torch.compile(model) if compiled else model
    bf16 = args.worker_dtype == "bfloat16"

    def run_step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(input_ids=data["encoder_input_tokens"],
                           decoder_input_ids=data["decoder_input_tokens"],
                           labels=data["decoder_target_tokens"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def report() -> dict:
        name = torch.cuda.get_device_name() if device == "cuda" else "torch"
        result = {"device": f"{device}: {name}", "threads": torch.get_num_threads(),
                  "attention": model.config._attn_implementation,
                  "params": sum(p.numel() for p in model.parameters()),
                  "flops_per_step": cfg.batch_size * flops.training_flops_per_example(
                      configs.t5_config(args.size), cfg.inputs_length, cfg.targets_length)}
        if device != "cpu":
            peak = flops.device_peak_flops(torch.cuda.get_device_name())
            result["peak_tflops"] = peak / 1e12 if peak else None
            result["device_peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        return result

    def matmul_burst() -> float:
        a = torch.ones((1024, 1024), dtype=torch.bfloat16 if bf16 else torch.float32)
        return best_rate(lambda: a @ a, lambda x: float(x[0, 0]), 2 * 1024 ** 3)

    # torch.compile recompiles during its first steps: give it more untimed steps.
    return Engine(run_step, lambda loss: loss.item(), report, extra_warmup=2 if compiled else 0,
                  matmul=matmul_burst if device == "cpu" else None)


def t5x_worker(args: argparse.Namespace) -> Engine | dict:
    """Real t5x on the same shapes: its `EncoderDecoderModel` (t5x/examples/t5 network, z-loss
    1e-4 as its T5 gin files), Adafactor with its factoring rules, and `Trainer`'s own jitted
    train step (`train_with_lr`, state donated). `{"skipped": why}` when t5x does not import."""
    try:
        from t5x import adafactor, models, partitioning, trainer, utils
        from t5x.examples.t5 import network as t5x_network
        import seqio  # after t5x: imports TensorFlow, slow to fail
    except ImportError as error:
        return {"skipped": f"t5x is not importable ({error}); put t5x on PYTHONPATH"}
    import jax
    import jax.numpy as jnp

    device = _xla_device()
    cfg = configs.SIZES[args.size]
    config = configs.t5_config(args.size, args.worker_dtype)
    module = t5x_network.Transformer(t5x_network.T5Config(**{
        field: getattr(config, field) for field in (
            "vocab_size", "emb_dim", "num_heads", "num_encoder_layers", "num_decoder_layers",
            "head_dim", "mlp_dim", "mlp_activations", "dropout_rate", "logits_via_embedding")},
        dtype=jnp.dtype(args.worker_dtype)))
    vocabulary = seqio.PassThroughVocabulary(cfg.vocab_size)
    optimizer = adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                                    logical_factor_rules=adafactor.standard_logical_factor_rules())
    model = models.EncoderDecoderModel(module, vocabulary, vocabulary, optimizer, z_loss=1e-4)
    partitioner = partitioning.PjitPartitioner(num_partitions=1)
    batch = random_batch(cfg.vocab_size, cfg.batch_size, cfg.inputs_length, cfg.targets_length)
    batch["decoder_loss_weights"] = (batch["decoder_target_tokens"] > 0).astype("float32")
    initializer = utils.TrainStateInitializer(
        optimizer_def=model.optimizer_def, init_fn=model.get_initial_variables,
        input_shapes={k: v.shape for k, v in batch.items()},
        input_types={k: v.dtype for k, v in batch.items()}, partitioner=partitioner)
    t5x_trainer = trainer.Trainer(
        model, initializer.from_scratch(jax.random.PRNGKey(0)), partitioner, eval_names=[],
        summary_dir=None, train_state_axes=initializer.train_state_axes,
        rng=jax.random.PRNGKey(1), num_microbatches=None,
        learning_rate_fn=utils.create_learning_rate_scheduler(
            factors="constant * rsqrt_decay", base_learning_rate=1.0, warmup_steps=10000))
    train_step = t5x_trainer._partitioned_train_step  # noqa: SLF001 (t5x's step, no loop)
    data = {k: jnp.asarray(v) for k, v in batch.items()}
    holder = {"state": t5x_trainer.train_state}

    def run_step():
        holder["state"], metrics = train_step(holder["state"], data)
        return metrics

    return Engine(run_step, jax.block_until_ready,
                  lambda: _xla_result(args, device, config, holder["state"].params),
                  matmul=_xla_matmul_burst(args.worker_dtype, device))


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(configs.SIZES), default="tiny")
    parser.add_argument("--dtype", choices=[*DTYPES, "both", "auto"], default="auto",
                        help="auto: bf16 on accelerators, both on CPUs with a bf16 matrix unit, "
                             "fp32 on other CPUs (where bf16 is emulated and takes minutes)")
    parser.add_argument("--engines", default="jax,torch,t5x",
                        help=f"comma list of {', '.join(ENGINES)}")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma list of defaults, tuned")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="cores (and threads) per engine; default: all usable cores")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats (>= 3), one per engine per interleaved round")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed repeat")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--worker_dtype", choices=list(DTYPES.values()), help=argparse.SUPPRESS)
    parser.add_argument("--worker_settings", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (min / median / max)")
    if args.threads < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--threads and --steps must be at least 1, --warmup at least 0")
    unknown = set(args.engines.split(",")) - set(ENGINES)
    unknown |= set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown engine or settings: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
        workers = {"jax": jax_worker, "t5x": t5x_worker,
                   "torch": functools.partial(torch_worker, compiled=False),
                   "torch_compile": functools.partial(torch_worker, compiled=True)}
        if args.worker_settings == "tuned" and args.worker in XLA_ENGINES:
            from clinical_t5x.train import runtime

            if runtime.backend_is_cpu():
                runtime.inline_cpu_dispatch()  # as the trainer does on CPU
        engine = workers[args.worker](args)
        if isinstance(engine, dict):  # skipped, with the reason
            _reply(engine)
        else:
            serve(args, engine)
        return 0
    from clinical_t5x.train import runtime

    interleave = runtime.backend_is_cpu()
    engines = args.engines.split(",")
    rows = []
    for dtype in benchmark_dtypes(args.dtype):
        for settings in args.settings.split(","):
            print(f"running {', '.join(engines)}: {dtype}, {settings} ...", file=sys.stderr,
                  flush=True)
            rows += run_group(args, engines, dtype, settings, interleave)
    print(format_table(rows, args.size, args.threads))
    for row in rows:
        print(json.dumps(row))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
