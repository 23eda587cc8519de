"""What the trainer reports: TensorBoard scalars (t5x's names), the console progress line, and
the model-FLOPs estimate behind its utilisation figure."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np

# Dense peak FLOP/s per device for the utilisation estimate (bf16 where the chip has it).
PEAK_FLOPS_BY_DEVICE_KIND: dict[str, float] = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def cpu_peak_flops() -> float | None:
    """fp32 FMA peak of the cores this process may use: cores x clock x FLOPs per cycle
    (64 with AVX-512: two 16-lane FMA pipes; 32 with AVX2+FMA). A rough ceiling, Linux only."""
    try:
        info = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz:
        return None
    per_cycle = 64 if " avx512f" in info else 32 if " fma" in info else 8
    return len(os.sched_getaffinity(0)) * max(mhz) * 1e6 * per_cycle


def peak_flops_total() -> float | None:
    """Peak FLOP/s of all devices of the job (CPU: of this host), None when unknown."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        peak = cpu_peak_flops()
        return None if peak is None else peak * jax.process_count()
    for name, flops in PEAK_FLOPS_BY_DEVICE_KIND.items():
        if name.lower() in device.device_kind.lower():
            return flops * jax.device_count()
    return None


def model_flops_per_sequence(config, inputs_length: int, targets_length: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one (packed) sequence.

    Counts the matrix multiplications: projections and MLPs at 2 FLOPs per weight per token,
    attention scores and mixing at 2 x 2 x length x heads x head_dim per token, and the
    output logits. Norms, softmax and the loss are left out, as in the usual MFU convention.
    """
    d, h, k = config.emb_dim, config.num_heads, config.head_dim
    mlp = len(config.mlp_activations) * d * config.mlp_dim + config.mlp_dim * d
    attn_proj = 4 * d * h * k
    enc_per_token = config.num_encoder_layers * (attn_proj + mlp + 2 * h * k * inputs_length)
    dec_per_token = config.num_decoder_layers * (
        2 * attn_proj + mlp + 2 * h * k * (targets_length + inputs_length)) + d * config.vocab_size
    forward = 2 * (enc_per_token * inputs_length + dec_per_token * targets_length)
    return 3.0 * forward


def create_writers(model_dir: str | os.PathLike, eval_name: str
                   ) -> tuple[metric_writers.MetricWriter, metric_writers.MetricWriter]:
    """Writers for `MODEL_DIR/train` and `MODEL_DIR/training_eval/<task>` (t5x's folders);
    only process 0 writes files, the others only log. clu's writers bring TensorFlow, hence
    the import here: importing the training code stays TensorFlow-free."""
    from clu import metric_writers

    quiet = jax.process_index() > 0
    train = metric_writers.create_default_writer(
        os.path.join(model_dir, "train"), just_logging=quiet, asynchronous=True)
    evaluation = metric_writers.create_default_writer(
        os.path.join(model_dir, "training_eval", eval_name), just_logging=quiet,
        asynchronous=True)
    return train, evaluation


def mean_metrics(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-name mean over steps (t5x averages train scalars over each summary period)."""
    names = history[0].keys()
    return {name: float(np.mean([h[name] for h in history])) for name in names}


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Throughput bookkeeping and the console line:
    `step 120/300 | loss/token 4.512 | acc 0.213 | lr 3.16e-02 | 2,412 tok/s | MFU 3.1% | ETA 2m10s`."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int,
                 feature_lengths: Mapping[str, int], flops_per_step: float,
                 peak_flops: float | None, stream=None):
        """`peak_flops`: of the whole job (`peak_flops_total`); None shows no MFU. The line's
        tok/s counts input tokens (the usual figure for encoder-decoder pretraining)."""
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.tokens_per_step = batch_size * feature_lengths["inputs"]
        self.target_tokens_per_step = batch_size * feature_lengths["targets"]
        self.flops_per_step = flops_per_step
        self.peak = peak_flops
        self.stream = stream
        self._mark_step, self._mark_time = start_step, time.perf_counter()

    def timing(self, step: int) -> dict[str, float]:
        """Rates since the previous call (t5x's `timing/*` scalars); restarts the clock."""
        now = time.perf_counter()
        steps, seconds = step - self._mark_step, max(now - self._mark_time, 1e-9)
        self._mark_step, self._mark_time = step, now
        rate = steps / seconds
        out = {"timing/steps_per_second": rate,
               "timing/seqs_per_second": rate * self.batch_size,
               "timing/input_tokens_per_second": rate * self.tokens_per_step,
               "timing/target_tokens_per_second": rate * self.target_tokens_per_step}
        if self.peak:
            out["timing/model_flops_utilization"] = rate * self.flops_per_step / self.peak
        return out

    def line(self, step: int, metrics: Mapping[str, float], timing: Mapping[str, float]) -> str:
        rate = timing["timing/steps_per_second"]
        per_token = metrics.get("loss_per_nonpadding_target_token", metrics["loss"])
        parts = [f"step {step}/{self.total_steps}", f"loss/token {per_token:.4f}",
                 f"acc {metrics.get('accuracy', float('nan')):.3f}",
                 f"lr {metrics.get('learning_rate', float('nan')):.2e}",
                 f"{rate * self.tokens_per_step:,.0f} tok/s"]
        if "timing/model_flops_utilization" in timing:
            parts.append(f"MFU {100 * timing['timing/model_flops_utilization']:.1f}%")
        remaining = (self.total_steps - step) / rate if rate > 0 else float("inf")
        parts.append(f"ETA {_duration(remaining)}")
        return " | ".join(parts)

    def report(self, step: int, metrics: Mapping[str, float], timing: Mapping[str, float]) -> None:
        if jax.process_index() == 0:
            print(self.line(step, metrics, timing), file=self.stream or sys.stderr, flush=True)
