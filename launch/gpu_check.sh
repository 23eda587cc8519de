#!/usr/bin/env bash
# Device check for docs/gpu.md, on one GPU: step time, MFU (the benchmark's shared FLOP count
# over the device's dense bf16 peak) and peak memory of T5 base in bf16 at the GPU presets'
# per-GPU batch (32 sequences of 512/114; benchmarks/configs.py "base"), built-in against
# Hugging Face PyTorch, next to the memory the presets' estimate gives
# (python launch/preset_table.py).
#
# usage: launch/gpu_check.sh [STEPS]
#   STEPS timed steps per repeat (default 100). Installs jax's CUDA build at the pinned jax
#   version when jax sees no GPU. Writes everything to stdout (and to $OUT/gpu_check.txt when
#   OUT is set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps="${1:-100}"
[[ "$steps" =~ ^[1-9][0-9]*$ ]] ||
  { echo "gpu_check.sh: STEPS must be a positive whole number" >&2; exit 2; }

main() {
  if ! python3 -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
    python3 -m pip install -q "jax[cuda12]==$(python3 -c 'import jax; print(jax.__version__)')"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== T5 base, 12 + 12 layers, batch 32 x 512/114, bf16, built-in vs PyTorch (SDPA)"
  python3 benchmarks/train_throughput.py --size base --dtype bf16 --engines jax,torch \
    --settings tuned --steps "$steps" --warmup 2
  echo "== the presets' estimate (12 + 12 layers; per GPU: weights, gradients, activations)"
  python3 launch/preset_table.py | grep -E '^\| gpu-|^Activations'
}

if [[ -n "${OUT:-}" ]]; then
  main 2>&1 | tee "$OUT/gpu_check.txt"
else
  main
fi
