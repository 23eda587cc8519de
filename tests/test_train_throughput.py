"""benchmarks/train_throughput.py: fair settings per engine, the report's arithmetic, the t5x
row (run, or skipped with its reason), and a micro run of the bf16 path (the GPU
configuration's dtype policy) on CPU."""
import argparse
import importlib.util
import io
import json
import subprocess
import sys

import pytest

from clinical_t5x.model import flops
from clinical_t5x.train import runtime


@pytest.fixture
def bench(monkeypatch, request):
    monkeypatch.syspath_prepend(str(request.config.rootpath / "benchmarks"))
    import train_throughput

    return train_throughput


def test_defaults_set_nothing_and_tuned_gives_every_engine_the_allocator(bench, monkeypatch):
    monkeypatch.setattr(runtime, "jaxlib_knows_ynn_flag", lambda: True)
    monkeypatch.setattr(runtime, "backend_is_cpu", lambda env=None: True)
    base = {"PATH": "/bin", "XLA_FLAGS": "--x", "GLIBC_TUNABLES": "a=1", "LD_PRELOAD": "l.so"}
    for engine in ("jax", "torch"):
        plain = bench.worker_env(base, "defaults", engine, "float32", threads=2)
        assert not {"XLA_FLAGS", "GLIBC_TUNABLES", "LD_PRELOAD"} & set(plain)
        assert plain["OMP_NUM_THREADS"] == plain["MKL_NUM_THREADS"] == "2"
        tuned = bench.worker_env(base, "tuned", engine, "float32", threads=2)
        assert tuned["GLIBC_TUNABLES"] == runtime.GLIBC_TUNABLES
        assert tuned["OMP_NUM_THREADS"] == "2" and tuned["PATH"] == "/bin"
    flags = " ".join(runtime.xla_cpu_flags("float32"))
    assert runtime.TREE_REDUCTION_FLAG in flags
    assert bench.worker_env(base, "tuned", "jax", "float32", 2)["XLA_FLAGS"] == flags
    assert "XLA_FLAGS" not in bench.worker_env(base, "tuned", "jax", "bfloat16", 2)
    assert "XLA_FLAGS" not in bench.worker_env(base, "tuned", "torch", "float32", 2)
    # t5x runs on XLA too: the same flags as the built-in step, no more.
    assert bench.worker_env(base, "tuned", "t5x", "float32", 2)["XLA_FLAGS"] == flags
    assert "XLA_FLAGS" not in bench.worker_env(base, "defaults", "t5x", "float32", 2)


def _row(engine, step_s, **extra):
    return {"engine": engine, "dtype": "float32", "settings": "tuned", "device": "cpu: x",
            "step_s": step_s, "cpu_s_per_step": 1.0, "peak_rss_gb": 1.5,
            "flops_per_step": 4e12, "matmul_tflops": 8.0, **extra}


def test_table_uses_the_median_for_rates_and_prints_min_median_max(bench):
    tokens = bench.configs.SIZES["tiny"].tokens_per_step
    table = bench.format_table([_row("jax", [4.0, 1.0, 2.0]), _row("torch", [3.0, 3.0, 3.0]),
                                {"engine": "torch_compile", "dtype": "float32",
                                 "settings": "tuned", "error": "exit code 1: boom"}],
                               "tiny", threads=2)
    jax_line = next(line for line in table.splitlines() if line.startswith("jax "))
    # min 1, median 2, max 4; tokens/s at the median; 4e12 FLOPs / 2 s = 2 TFLOP/s = 25% of 8.
    assert jax_line.split()[5:11] == ["1.000", "2.000", "4.000", "1.00", str(tokens // 2),
                                      "2.000"]
    assert "25.0%" in jax_line
    assert "built-in vs torch, float32, tuned: 1.50x (faster; ratio of median steps 1.50x)" \
        in table
    assert "torch_compile float32  tuned    failed: exit code 1: boom" in table
    assert f"tokens/step = batch x (inputs + targets) = {tokens:,}" in table
    assert "threads per engine: 2" in table and runtime.this_cpu().model in table


def test_interleaved_speedup_is_the_median_of_the_per_round_ratios(bench):
    rows = [_row("jax", [1.0, 2.0, 1.0], interleaved=True),
            _row("torch", [1.5, 2.0, 0.9], interleaved=True)]
    # Per round 1.5, 1.0, 0.9: median 1.0 (the medians' ratio 1.5 would overstate it).
    assert bench.speedup_lines(rows) == [
        "built-in vs torch, float32, tuned: 1.00x (slower; median of 3 interleaved rounds, "
        "range 0.90-1.50; ratio of median steps 1.50x)"]


class _FakeWorker:
    """Stands in for `Worker`: records the order in which the engines were timed."""

    order: list[str] = []

    def __init__(self, args, engine, dtype, settings):
        self.row = {"engine": engine, "dtype": dtype, "settings": settings}
        self.timing = engine != "t5x"  # as if t5x were not installed

    def wait_ready(self):
        if not self.timing:
            self.row["skipped"] = "not installed"

    def time_repeat(self):
        self.order.append(self.row["engine"])

    def finish(self):
        return {**self.row, "step_s": [1.0]} if self.timing else self.row


def test_engines_take_turns_in_rotating_order(bench, monkeypatch):
    monkeypatch.setattr(bench, "Worker", _FakeWorker)
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(_FakeWorker, "order", [])
    args = bench.parse_args(["--repeats", "3"])
    rows = bench.run_group(args, ["jax", "torch", "t5x"], "float32", "tuned", interleave=True)
    assert _FakeWorker.order == ["jax", "torch", "torch", "jax", "jax", "torch"]
    assert [r.get("interleaved") for r in rows] == [True, True, None]
    monkeypatch.setattr(_FakeWorker, "order", [])
    rows = bench.run_group(args, ["jax", "torch"], "float32", "tuned", interleave=False)
    assert _FakeWorker.order == ["jax"] * 3 + ["torch"] * 3
    assert [r["interleaved"] for r in rows] == [False, False]


def test_matmul_rate_is_the_best_burst_each_taken_before_the_repeat_is_answered(
        bench, monkeypatch):
    events, rates = [], iter([0.1, 0.3, 0.2])

    def burst():
        events.append("burst")
        return next(rates)

    engine = bench.Engine(lambda: events.append("step"), lambda out: out,
                          lambda: {"flops_per_step": 1.0}, matmul=burst)
    monkeypatch.setattr(bench, "_reply", lambda message: events.append(message))
    monkeypatch.setattr(sys, "stdin", io.StringIO("step\nstep\nstep\nreport\n"))
    bench.serve(argparse.Namespace(warmup=1, steps=1), engine)
    replies = [event for event in events if isinstance(event, dict)]
    assert [set(reply) for reply in replies[1:4]] == [{"step_s", "cpu_s"}] * 3
    assert [event if isinstance(event, str) else "reply" for event in events][:10] == [
        "step", "reply", "step", "burst", "reply", "step", "burst", "reply", "step", "burst"]
    assert replies[-1]["matmul_tflops"] == 0.3 and replies[-1]["flops_per_step"] == 1.0


def test_peak_rss_is_the_workers_own_not_its_parents(request):
    """A worker started by a parent that once held 1 GiB: `ru_maxrss` carries the parent's
    peak over (vfork, then exec); the figure the benchmark reports does not."""
    import numpy as np

    held = np.ones(2 ** 27)  # 1 GiB, touched
    del held
    child = ("import json, resource, train_throughput as bench; print(json.dumps("
             "[bench.peak_rss_gb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20]))")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         check=True, cwd=request.config.rootpath / "benchmarks")
    own, inherited = json.loads(out.stdout)
    assert inherited >= 1.0  # the pitfall is present here, so the next line means something
    assert 0 < own < 0.5


def test_a_worker_that_dies_becomes_an_error_row(bench, monkeypatch):
    monkeypatch.setattr(bench.sys, "executable", "false")  # exits 1 at once, says nothing
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    args = bench.parse_args(["--size", "micro"])
    [row] = bench.run_group(args, ["jax"], "float32", "tuned", interleave=True)
    assert row["error"] == "exit code 1: no output" and "step_s" not in row


def test_t5x_row_is_skipped_with_its_reason_when_t5x_does_not_import(bench, monkeypatch):
    monkeypatch.setitem(sys.modules, "t5x", None)  # makes `import t5x...` raise ImportError
    args = bench.parse_args(["--size", "micro", "--worker", "t5x", "--worker_dtype", "float32",
                             "--worker_settings", "tuned"])
    skipped = bench.t5x_worker(args)
    assert set(skipped) == {"skipped"} and "t5x is not importable" in skipped["skipped"]
    row = {"engine": "t5x", "dtype": "float32", "settings": "tuned", **skipped}
    table = bench.format_table([_row("jax", [2.0, 2.0, 2.0]), row], "tiny", threads=2)
    assert f"t5x           float32  tuned    skipped: {skipped['skipped']}" in table
    assert "built-in vs t5x" not in table
    assert bench.parse_args([]).engines.split(",") == ["jax", "torch", "t5x"]


@pytest.mark.parametrize("on_cpu, cpuinfo, expected", [
    (True, "flags : avx2 fma amx_bf16", ["float32", "bfloat16"]),
    (True, "flags : avx2 fma", ["float32"]), (False, "flags : avx2", ["bfloat16"])])
def test_auto_dtypes_leave_out_emulated_bf16(bench, monkeypatch, on_cpu, cpuinfo, expected):
    monkeypatch.setattr(runtime, "backend_is_cpu", lambda env=None: on_cpu)
    monkeypatch.setattr(runtime, "this_cpu", lambda: runtime.parse_cpuinfo(cpuinfo))
    assert bench.benchmark_dtypes("auto") == expected
    assert bench.benchmark_dtypes("both") == ["float32", "bfloat16"]
    assert bench.benchmark_dtypes("bf16") == ["bfloat16"]


@pytest.mark.parametrize("bad", [["--repeats", "2"], ["--threads", "0"], ["--steps", "0"]])
def test_too_few_repeats_threads_or_steps_are_refused(bench, bad):
    with pytest.raises(SystemExit):
        bench.parse_args(bad)


@pytest.mark.heavy
def test_micro_bf16_run_of_both_engines(request):
    """The GPU path's configuration (bf16 activations, shared FLOP count, tuned settings)
    end to end on CPU, on the micro model."""
    script = request.config.rootpath / "benchmarks" / "train_throughput.py"
    out = subprocess.run([sys.executable, str(script), "--size", "micro", "--dtype", "bf16",
                          "--settings", "tuned", "--engines", "jax,torch", "--warmup", "1"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [(r["engine"], r["dtype"]) for r in rows] == [("jax", "bfloat16"),
                                                         ("torch", "bfloat16")]
    sys.path.insert(0, str(script.parent))
    import configs

    cfg = configs.SIZES["micro"]
    expected = cfg.batch_size * flops.training_flops_per_example(
        configs.t5_config("micro"), cfg.inputs_length, cfg.targets_length)
    for row in rows:
        assert len(row["step_s"]) == 5 and row["flops_per_step"] == expected
        assert row["interleaved"] and row["warmup_s"] > 0
        assert row["threads"] >= 1 and row["peak_rss_gb"] > 0 and row["matmul_tflops"] > 0
    assert "built-in vs torch, bfloat16, tuned" in out.stdout


@pytest.mark.heavy
@pytest.mark.t5x
@pytest.mark.skipif(importlib.util.find_spec("t5x") is None, reason="t5x is not importable")
def test_micro_run_of_real_t5x_next_to_the_built_in_step(request):
    """t5x's own train step on the benchmark's shapes, timed like the other engines, with the
    shared FLOP count and a speed-up line against the built-in step."""
    script = request.config.rootpath / "benchmarks" / "train_throughput.py"
    out = subprocess.run([sys.executable, str(script), "--size", "micro", "--dtype", "fp32",
                          "--settings", "tuned", "--engines", "jax,t5x", "--warmup", "1"],
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["engine"]: r for r in map(json.loads, (
        line for line in out.stdout.splitlines() if line.startswith("{")))}
    assert set(rows) == {"jax", "t5x"}
    assert len(rows["t5x"]["step_s"]) == 5 and rows["t5x"]["peak_rss_gb"] > 0
    # Same model: same parameter count and FLOPs as the built-in step.
    assert rows["t5x"]["params"] == rows["jax"]["params"]
    assert rows["t5x"]["flops_per_step"] == rows["jax"]["flops_per_step"]
    assert "built-in vs t5x, float32, tuned" in out.stdout
