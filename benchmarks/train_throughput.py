"""Training throughput of the built-in Flax T5 step vs Hugging Face PyTorch, same shapes.

    python benchmarks/train_throughput.py --size small               # CPU: JAX + PyTorch eager
    python benchmarks/train_throughput.py --size small --engines jax,torch,torch_compile
    python benchmarks/train_throughput.py --gin_file gin/variants/base.gin --engines jax
    python benchmarks/train_throughput.py --size base --dtype bfloat16 --batch_size 64  # GPU

Each engine runs in its own subprocess (so peak RSS is per engine); the JAX worker applies
`runtime.configure_cpu_runtime()` (malloc settings + XLA flag) like the trainer does.
Random token batches, no padding. tokens/s counts batch * (inputs_length + targets_length)
per step, the convention of the issue's reference figures. MFU = model matmul FLOPs
(`network.training_flops_per_example`, forward + backward) / step time / peak FLOP/s; the
peak comes from a table by device kind on GPU/TPU (dense bf16), and from --peak_tflops on CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (T5Config fields, batch_size, inputs_length, targets_length)
SIZES: dict[str, tuple[dict, int, int, int]] = {
    "tiny": (dict(vocab_size=8192, emb_dim=256, num_heads=4, head_dim=64, mlp_dim=1024,
                  num_encoder_layers=4, num_decoder_layers=4), 16, 256, 64),
    "small": (dict(vocab_size=32128, emb_dim=512, num_heads=8, head_dim=64, mlp_dim=1024,
                   num_encoder_layers=6, num_decoder_layers=6), 8, 512, 114),
    "base": (dict(vocab_size=32128, emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048,
                  num_encoder_layers=12, num_decoder_layers=12), 32, 512, 114),
    "large": (dict(vocab_size=32128, emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816,
                   num_encoder_layers=24, num_decoder_layers=24), 32, 512, 114),
}

# Dense bf16 peak TFLOP/s by (substring of) jax device_kind; first match wins.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
               ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
               ("V100", 125.0), ("TPU v6", 918.0), ("TPU v5p", 459.0), ("TPU v5", 197.0),
               ("TPU v4", 275.0), ("TPU v3", 123.0))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def model_config(args: argparse.Namespace):
    """(T5Config, batch, inputs_length, targets_length) from --size or --gin_file."""
    from clinical_t5x.model import network

    if args.gin_file:
        import gin

        gin.add_config_file_search_path(str(REPO / "gin"))
        gin.parse_config_files_and_bindings(args.gin_file, args.gin_param, skip_unknown=True)
        lengths = _macro("TASK_FEATURE_LENGTHS", {"inputs": 512, "targets": 114})
        fields = dataclasses.asdict(network.T5Config())
        batch, inputs, targets = (_macro("BATCH_SIZE", 8), lengths["inputs"],
                                  lengths["targets"])
    else:
        base, batch, inputs, targets = SIZES[args.size]
        fields = {**dataclasses.asdict(network.T5Config()), **base,
                  "mlp_activations": ("gelu", "linear"), "logits_via_embedding": False}
    fields.update(dropout_rate=args.dropout_rate,
                  dtype=args.dtype or fields["dtype"])
    return (network.T5Config(**fields), args.batch_size or batch,
            args.inputs_length or inputs, args.targets_length or targets)


def _macro(name: str, default):
    import gin

    try:
        return gin.query_parameter(f"%{name}")
    except ValueError:
        return default


def random_batch(vocab: int, batch: int, inputs: int, targets: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, vocab, (batch, targets)).astype(np.int32)
    return {"encoder_input_tokens": rng.integers(2, vocab, (batch, inputs)).astype(np.int32),
            "decoder_target_tokens": tgt,
            "decoder_input_tokens": np.pad(tgt, ((0, 0), (1, 0)))[:, :-1]}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_steps(run_step, sync, warmup: int, steps: int) -> dict[str, float]:
    """First-step seconds (incl. compile), then wall and CPU seconds per step after warm-up.

    CPU seconds (user + system, all threads) are reported because on a shared machine wall
    time mostly measures the neighbours.
    """
    start = time.perf_counter()
    sync(run_step())
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        sync(run_step())
    start, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(steps):
        out = run_step()
    sync(out)
    return {"first_step_s": first, "step_s": (time.perf_counter() - start) / steps,
            "cpu_s_per_step": (_cpu_seconds() - cpu) / steps}


def jax_worker(args: argparse.Namespace) -> dict:
    from clinical_t5x.train import runtime

    runtime.configure_cpu_runtime()
    import jax

    from clinical_t5x.model import network, optim, partitioning, steps

    if args.dtype is None and jax.default_backend() != "cpu":
        args.dtype = "bfloat16"
    config, batch, inputs, targets = model_config(args)
    model = network.Transformer(config)
    optimizer = optim.make_optimizer(warmup_steps=10000)
    partitioner = partitioning.Partitioner(num_partitions=args.num_partitions)
    state = steps.init_train_state(model, optimizer, partitioner, None, jax.random.PRNGKey(0))
    step_fn = steps.make_train_step(model, optimizer, partitioner, args.num_microbatches)
    data = partitioning.global_batch_from_local(
        random_batch(config.vocab_size, batch, inputs, targets), partitioner.data_sharding)
    rng = jax.random.PRNGKey(1)
    holder = {"state": state}

    def run_step():
        holder["state"], metrics = step_fn(holder["state"], data, rng)
        return metrics

    timing = _timed_steps(run_step, jax.block_until_ready, args.warmup, args.steps)
    device = jax.devices()[0]
    result = {"engine": "jax", "device": f"{device.platform}: {device.device_kind}",
              "devices": jax.device_count(), **timing,
              "params": sum(x.size for x in jax.tree_util.tree_leaves(holder["state"].params)),
              "flops_per_step": batch * network.training_flops_per_example(config, inputs,
                                                                           targets),
              "dtype": str(config.dtype), "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "malloc": os.environ.get("LD_PRELOAD") or os.environ.get("GLIBC_TUNABLES")
              or "default"}
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        result["device_peak_gb"] = stats["peak_bytes_in_use"] / 2 ** 30
    if device.platform != "cpu":
        result["peak_tflops"] = next((p for kind, p in PEAK_TFLOPS
                                      if kind in device.device_kind), None)
    return result


def torch_worker(args: argparse.Namespace, compiled: bool) -> dict:
    import torch
    import transformers
    from transformers.optimization import Adafactor

    config, batch, inputs, targets = model_config(args)
    gated = len(config.mlp_activations) > 1
    hf_config = transformers.T5Config(
        vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim,
        d_ff=config.mlp_dim, num_layers=config.num_encoder_layers,
        num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
        feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=config.logits_via_embedding, dropout_rate=config.dropout_rate,
        relative_attention_num_buckets=32, relative_attention_max_distance=128)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(hf_config)
    if not config.logits_via_embedding:
        # transformers 5 always ties lm_head to the embedding; T5 1.1 has its own head.
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    model = model.to(device).train()
    optimizer = Adafactor(model.parameters(), lr=1e-2, relative_step=False,
                          scale_parameter=True, warmup_init=False)
    data = {k: torch.from_numpy(v).long().to(device)
            for k, v in random_batch(config.vocab_size, batch, inputs, targets).items()}
    forward = torch.compile(model) if compiled else model
    use_bf16 = str(config.dtype) == "bfloat16" or (device == "cuda" and args.dtype is None)

    def run_step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
            loss = forward(input_ids=data["encoder_input_tokens"],
                           decoder_input_ids=data["decoder_input_tokens"],
                           labels=data["decoder_target_tokens"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync(loss):
        loss.item()

    timing = _timed_steps(run_step, sync, args.warmup, args.steps)
    result = {"engine": "torch_compile" if compiled else "torch", "device": device, **timing,
              "threads": torch.get_num_threads(),
              "params": sum(p.numel() for p in model.parameters()),
              "flops_per_step": None, "dtype": "bfloat16 autocast" if use_bf16 else "float32"}
    if device == "cuda":
        result["device_peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return result


def run_engine(engine: str, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        return {"engine": engine, "error": f"exit code {proc.returncode}"}
    return json.loads(lines[-1])


def report(results: list[dict], tokens_per_step: int, peak_tflops: float | None) -> None:
    flops = next((r["flops_per_step"] for r in results if r.get("flops_per_step")), None)
    print(f"tokens/step = batch x (inputs + targets) = {tokens_per_step}; "
          f"model FLOPs/step = {flops:.3e}" if flops else "")
    print(f"{'engine':<14}{'device':<24}{'s/step':>8}{'cpu s/step':>11}{'tokens/s':>10}"
          f"{'TFLOP/s':>9}{'MFU':>7}{'peak RSS GB':>12}{'dev GB':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['engine']:<14}failed: {r['error']}")
            continue
        tflops = flops / r["step_s"] / 1e12 if flops else None
        peak = r.get("peak_tflops") or peak_tflops
        mfu = f"{100 * tflops / peak:6.1f}%" if tflops and peak else "   n/a"
        dev = f"{r['device_peak_gb']:8.2f}" if "device_peak_gb" in r else "       -"
        print(f"{r['engine']:<14}{r['device'][:23]:<24}{r['step_s']:8.3f}"
              f"{r['cpu_s_per_step']:11.3f}"
              f"{tokens_per_step / r['step_s']:10.0f}{tflops or 0:9.3f}{mfu:>7}"
              f"{r['peak_rss_gb']:12.2f}{dev}")
    for r in results:
        print(json.dumps(r))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file(s) with network.T5Config bindings (overrides --size)")
    parser.add_argument("--gin_param", action="append", default=[])
    parser.add_argument("--engines", default="jax,torch",
                        help="comma list of jax, torch, torch_compile")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (incl. compile)")
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--inputs_length", type=int)
    parser.add_argument("--targets_length", type=int)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help="activation dtype (default: float32 on CPU, bfloat16 on GPU/TPU)")
    parser.add_argument("--dropout_rate", type=float, default=0.0)
    parser.add_argument("--num_partitions", type=int, default=1)
    parser.add_argument("--num_microbatches", type=int)
    parser.add_argument("--peak_tflops", type=float,
                        help="device peak TFLOP/s for MFU on CPU (e.g. cores x GHz x 64 / 1000 "
                             "for fp32 AVX-512 FMA)")
    parser.add_argument("--worker", choices=["jax", "torch", "torch_compile"],
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        result = (jax_worker(args) if args.worker == "jax"
                  else torch_worker(args, compiled=args.worker == "torch_compile"))
        result["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(result), flush=True)
        return 0
    if args.gin_file:
        _, batch, inputs, targets = model_config(args)  # imports jax, starts no backend
    else:
        _, batch, inputs, targets = SIZES[args.size]
    batch = args.batch_size or batch
    tokens = batch * ((args.inputs_length or inputs) + (args.targets_length or targets))
    results = []
    for engine in args.engines.split(","):
        print(f"running {engine} ...", file=sys.stderr, flush=True)
        results.append(run_engine(engine, argv))
    report(results, tokens, args.peak_tflops)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
