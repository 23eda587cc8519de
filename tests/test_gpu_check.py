"""launch/gpu_check.sh without a GPU: with a fake python3 and nvidia-smi it must ask the
benchmark for T5 base in bf16 at batch 32 x 512/114, built-in against PyTorch, and the
benchmark must read those flags as that model."""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "launch" / "gpu_check.sh"


def _benchmark():
    if str(ROOT / "benchmarks") not in sys.path:  # its `import configs`
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("train_throughput",
                                                  ROOT / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Runs gpu_check.sh with python3 (recording; `-c` succeeds as on a GPU; the preset table
    runs for real) and nvidia-smi faked. Returns the result and python3's argument lists."""
    bin_dir, log = tmp_path / "bin", tmp_path / "python3.log"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%q ' \"$@\" >> {log}; echo >> {log}\n"
        f"[[ \"$1\" == launch/preset_table.py ]] && exec {sys.executable} \"$@\"\n"
        "exit 0\n")
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559 MiB, 550'\n")
    for tool in ("python3", "nvidia-smi"):
        (bin_dir / tool).chmod(0o755)
    result = subprocess.run(["bash", str(GPU_CHECK), *args], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                              "OUT": str(tmp_path)})
    calls = [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_gpu_check_runs_base_bf16_against_pytorch(tmp_path):
    result, calls = run_check(tmp_path, "300")
    assert result.returncode == 0, result.stderr
    runs = [c[1:] for c in calls if c[0] == "benchmarks/train_throughput.py"]
    assert len(runs) == 1
    benchmark = _benchmark()
    args = benchmark.parse_args(runs[0])
    assert (args.size, args.dtype, args.engines, args.steps) == ("base", "bf16", "jax,torch", 300)
    size = benchmark.configs.SIZES[args.size]
    assert (size.batch_size, size.inputs_length, size.targets_length) == (32, 512, 114)
    assert benchmark.configs.t5_config(args.size, "bfloat16").dtype == "bfloat16"
    report = (tmp_path / "gpu_check.txt").read_text()
    assert report.startswith("NVIDIA H100 80GB HBM3")
    assert "| gpu-8x48g " in report  # the estimate to compare with


def test_gpu_check_rejects_bad_arguments_before_doing_anything(tmp_path):
    result, calls = run_check(tmp_path, "many")
    assert result.returncode == 2 and "positive whole number" in result.stderr
    assert calls == []
