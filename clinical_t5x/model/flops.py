"""One way to count: the model FLOPs of a training step and the peak FLOP/s they are divided by.

The trainer's MFU, the benchmark's MFU and the docs all use these two numbers, so a figure
read off the progress line and one printed by `benchmarks/train_throughput.py` agree.
No jax import here: the benchmark's parent process and the docs tooling use it without a
backend.
"""
from __future__ import annotations

# Dense bf16 peak FLOP/s per device, matched as a substring of the device name (jax
# `device_kind` or torch's CUDA device name), first match wins: the more specific names come
# first ("H100 PCIe" before "H100", "A100" before "A10", "L40S" before "L4",
# "TPU v5 lite" (v5e) before "TPU v5" (v5p)).
PEAK_FLOPS_BY_DEVICE_KIND: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("GH200", 989e12), ("H200", 989e12), ("H100", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12), ("V100", 125e12),
    ("TPU v6 lite", 918e12), ("TPU v6", 918e12), ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12), ("TPU v4", 275e12),
    ("TPU v3", 123e12),
)


def training_flops_per_example(config, inputs_length: int, targets_length: int) -> float:
    """Matmul FLOPs of one training example (forward + backward = 3x forward), for MFU.

    Counts every projection (2 FLOPs per weight per token), the attention score and mixing
    products, and the output head. The decoder's cross-attention key/value projections run
    once per INPUT token, not per target token. Norms, softmax, the loss and the embedding
    gather are left out (a few percent), as in the usual MFU convention.
    `config` is a `network.T5Config` (any object with its field names).
    """
    d, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
    n = config.num_heads * config.head_dim
    mlp = 2 * d * f * (len(config.mlp_activations) + 1)  # per token
    li, lt = inputs_length, targets_length
    encoder = li * (8 * d * n + mlp) + 4 * li * li * n
    decoder = (lt * (8 * d * n + 4 * d * n + mlp) + 4 * li * d * n
               + 4 * lt * lt * n + 4 * lt * li * n)
    forward = (config.num_encoder_layers * encoder + config.num_decoder_layers * decoder
               + 2 * lt * d * v)
    return 3.0 * forward


def device_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of one accelerator from its name, None when not in the table."""
    name = device_name.lower()
    return next((peak for kind, peak in PEAK_FLOPS_BY_DEVICE_KIND if kind.lower() in name),
                None)


def cpu_peak_flops(cpuinfo: str, cores: int) -> float | None:
    """fp32 FMA ceiling of `cores` cores described by a /proc/cpuinfo text: cores x clock x
    FLOPs per cycle (64 with AVX-512: two 16-lane FMA pipes; 32 with AVX2+FMA; 8 otherwise).

    A rough ceiling for the trainer's MFU on CPU; the benchmark compares with a measured
    matmul rate instead. None when the text has no clock (some VMs and ARM kernels).
    """
    mhz = [float(line.split(":", 1)[1]) for line in cpuinfo.splitlines()
           if line.startswith("cpu MHz") and ":" in line]
    if not mhz:
        return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags") and ":" in line), [])
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    return cores * max(mhz) * 1e6 * per_cycle
