"""Trainer reporting: the progress line and its header, period means, the job's peak."""

import io
import os

import jax
import pytest

from clinical_t5x.model import flops
from clinical_t5x.train import summaries


def test_progress_line_has_step_loss_rate_throughput_mfu_and_eta():
    stream = io.StringIO()
    progress = summaries.Progress(0, 100, 10, {"inputs": 100, "targets": 20}, flops_per_step=1e9,
                                  peak_flops=1e10, stream=stream)
    timing = {"timing/steps_per_second": 2.0, "timing/model_flops_utilization": 0.2}
    metrics = {"loss": 40.0, "loss_per_nonpadding_target_token": 4.0, "accuracy": 0.25,
               "learning_rate": 0.01}
    progress.report(10, metrics, timing)
    progress.report(10, metrics, timing)
    header, line, again = stream.getvalue().strip().splitlines()
    # 2 steps/s x 10 sequences x (100 inputs + 20 targets) = 2,400 tokens/s.
    assert line == again == ("step 10/100 | loss/token 4.0000 | acc 0.250 | lr 1.00e-02 | "
                             "2,400 tok/s | MFU 20.0% | ETA 0m45s")
    assert "tok/s = steps/s x batch x (inputs + targets) = steps/s x 1,200" in header


def test_timing_scalars_split_inputs_and_targets():
    progress = summaries.Progress(0, 100, 10, {"inputs": 100, "targets": 20}, flops_per_step=1e9,
                                  peak_flops=1e10)
    progress._mark_time -= 2.0  # two seconds for the ten steps below
    timing = progress.timing(10)
    rate = timing["timing/steps_per_second"]
    assert timing["timing/input_tokens_per_second"] == pytest.approx(rate * 1000)
    assert timing["timing/target_tokens_per_second"] == pytest.approx(rate * 200)
    assert timing["timing/model_flops_utilization"] == pytest.approx(rate * 1e9 / 1e10)


def test_mean_over_the_summary_period():
    assert summaries.mean_metrics([{"loss": 1.0}, {"loss": 3.0}]) == {"loss": 2.0}


def test_job_peak_is_the_shared_estimate_for_this_host():
    cpuinfo = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    cores = len(os.sched_getaffinity(0))
    expected = flops.cpu_peak_flops(cpuinfo, cores)
    assert jax.devices()[0].platform == "cpu"
    assert summaries.peak_flops_total() == expected
