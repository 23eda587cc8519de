#!/usr/bin/env bash
# Device check for docs/gpu.md, on one GPU: step time, MFU (the benchmark's shared FLOP count
# over the device's dense bf16 peak) and peak GPU memory of the base variant in bf16 at the GPU
# presets' per-GPU batch (32 sequences of 512/114), without and with ACTIVATION_REMAT, next to
# the memory the presets' estimate gives (python launch/preset_table.py).
#
# usage: launch/gpu_check.sh [STEPS] [LAYERS]
#   STEPS timed steps (default 300); LAYERS encoder = decoder layers (default 12, the full base;
#   fewer if a small GPU does not hold batch 32). Installs jax's CUDA build at the pinned jax
#   version when jax sees no GPU. Writes everything to stdout (and to $OUT/gpu_check.txt when
#   OUT is set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps="${1:-300}" layers="${2:-12}"
[[ "$steps" =~ ^[1-9][0-9]*$ && "$layers" =~ ^[1-9][0-9]*$ ]] ||
  { echo "gpu_check.sh: STEPS and LAYERS must be positive whole numbers" >&2; exit 2; }

main() {
  if ! python3 -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
    python3 -m pip install -q "jax[cuda12]==$(python3 -c 'import jax; print(jax.__version__)')"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  local remat
  for remat in False True; do
    echo "== base, $layers + $layers layers, batch 32 x 512/114, bf16, ACTIVATION_REMAT = $remat"
    python3 benchmarks/train_throughput.py --gin_file gin/variants/base.gin --engines jax \
      --dtype bfloat16 --batch_size 32 --steps "$steps" --warmup 5 \
      --gin_param "INIT_CHECKPOINT = None" \
      --gin_param "network.T5Config.num_encoder_layers = $layers" \
      --gin_param "network.T5Config.num_decoder_layers = $layers" \
      --gin_param "network.T5Config.remat = $remat"
  done
  echo "== the presets' estimate (12 + 12 layers; per GPU: weights, gradients, activations)"
  python3 launch/preset_table.py | grep -E '^\| gpu-|^Activations'
}

if [[ -n "${OUT:-}" ]]; then
  main 2>&1 | tee "$OUT/gpu_check.txt"
else
  main
fi
