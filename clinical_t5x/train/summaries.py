"""What the trainer reports: TensorBoard scalars (t5x's names), the console progress line, and
the peak FLOP/s behind its utilisation figure (the model FLOPs come from `model.flops`)."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from clinical_t5x.model import flops


def peak_flops_total() -> float | None:
    """Peak FLOP/s of all devices of the job (CPU: this host's usable cores), None when
    unknown; the table and the CPU estimate are `flops`'s, shared with the benchmark."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        try:
            cpuinfo = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
        except OSError:
            return None
        peak = flops.cpu_peak_flops(cpuinfo, len(os.sched_getaffinity(0)))
        return None if peak is None else peak * jax.process_count()
    peak = flops.device_peak_flops(device.device_kind)
    return None if peak is None else peak * jax.device_count()


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
        tok/s counts input + target tokens, the benchmark's definition (see `header`)."""
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.input_tokens_per_step = batch_size * feature_lengths["inputs"]
        self.target_tokens_per_step = batch_size * feature_lengths["targets"]
        self.tokens_per_step = self.input_tokens_per_step + self.target_tokens_per_step
        self.flops_per_step = flops_per_step
        self.peak = peak_flops
        self.stream = stream
        self._header_shown = False
        self._mark_step, self._mark_time = start_step, time.perf_counter()

    def header(self) -> str:
        """What the line's figures mean, printed once before the first line."""
        mfu = (f"MFU = {self.flops_per_step:.3g} model FLOPs/step x steps/s / "
               f"{self.peak:.3g} peak FLOP/s" if self.peak else "no MFU (peak FLOP/s unknown)")
        return (f"progress: tok/s = steps/s x batch x (inputs + targets) = steps/s x "
                f"{self.tokens_per_step:,}; {mfu}")

    def timing(self, step: int) -> dict[str, float]:
        """Rates since the previous call (t5x's `timing/*` scalars); restarts the clock."""
        now = time.perf_counter()
        steps, seconds = step - self._mark_step, max(now - self._mark_time, 1e-9)
        self._mark_step, self._mark_time = step, now
        rate = steps / seconds
        out = {"timing/steps_per_second": rate,
               "timing/seqs_per_second": rate * self.batch_size,
               "timing/input_tokens_per_second": rate * self.input_tokens_per_step,
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
        if jax.process_index() != 0:
            return
        stream = self.stream or sys.stderr
        if not self._header_shown:
            print(self.header(), file=stream, flush=True)
            self._header_shown = True
        print(self.line(step, metrics, timing), file=stream, flush=True)
