"""Peak memory of `clinical-t5x export` against the size of the weights it converts.

Generates a random t5x-layout checkpoint (`--size small` / `base`: the T5 1.1
shapes of benchmarks/configs.py, ~77M / ~248M params) and a synthetic vocabulary, then runs
the export in a fresh process and reads that process's peak resident memory (VmHWM). The
libraries the exporter uses (orbax -> jax, tensorstore; transformers and tokenizers for the
tokenizer check) cost a fixed ~400 MiB before any weight is read, so both ratios are printed:
peak / weights, and (peak - RSS after imports) / weights, the part that grows with the model.

    python benchmarks/export_memory.py --size base --workdir /tmp/export-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import configs  # benchmarks/configs.py: the named model sizes
import proc_status  # benchmarks/proc_status.py: this process's memory figures


def make_inputs(size: str, workdir: Path) -> None:
    """Child process: random checkpoint + synthetic vocabulary (their memory is not measured)."""
    from clinical_t5x.train import checkpoint_formats
    from clinical_t5x.hf import convert as hf
    from clinical_t5x.text import vocab_build

    dims = configs.hf_dims(size)
    checkpoint_formats.write_params_checkpoint(hf.random_params(dims, seed=0), workdir / "model")
    vocab_build.build_synthetic_vocab(workdir / "vocab", vocab_size=2000)


def measure(workdir: Path) -> dict:
    """Child process: import the exporter, note RSS, export, report the peak."""
    import numpy as np
    from transformers import AutoTokenizer

    from clinical_t5x.train import checkpoint_formats

    from clinical_t5x.hf import convert as hf

    AutoTokenizer.from_pretrained(workdir / "vocab")  # the tokenizer check's fixed cost

    shutil.rmtree(workdir / "hf", ignore_errors=True)
    reader = checkpoint_formats.ParamReader(workdir / "model")
    weight_bytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in reader.shapes.values())
    baseline = proc_status.kib("VmRSS") * 1024
    hf.export(workdir / "model", workdir / "vocab", workdir / "hf")
    peak = proc_status.kib("VmHWM") * 1024
    return {"weights_MiB": round(weight_bytes / 2**20, 1), "rss_after_imports_MiB": round(baseline / 2**20, 1),
            "peak_rss_MiB": round(peak / 2**20, 1), "peak_over_weights": round(peak / weight_bytes, 3),
            "growth_over_weights": round((peak - baseline) / weight_bytes, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(configs.SIZES), default="small")
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--_child", choices=("make", "measure"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="export-bench-"))
    if args._child == "make":
        make_inputs(args.size, workdir)
        return 0
    if args._child == "measure":
        print(json.dumps(measure(workdir)))
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, __file__, "--size", args.size, "--workdir", str(workdir)]
    if not (workdir / "model").exists():
        subprocess.run(base + ["--_child", "make"], check=True, stdout=subprocess.DEVNULL)
    result = subprocess.run(base + ["--_child", "measure"], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps({"size": args.size, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
