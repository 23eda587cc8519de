"""Trainer reporting: the FLOPs estimate behind MFU, the progress line, period means."""

import io

import pytest

from clinical_t5x.model import network

from clinical_t5x.train import summaries


def test_flops_estimate_is_six_flops_per_weight_per_token_plus_attention():
    config = network.T5Config(vocab_size=1024, emb_dim=64, num_heads=2, head_dim=32, mlp_dim=128,
                              num_encoder_layers=1, num_decoder_layers=1,
                              mlp_activations=("relu",))
    flops = summaries.model_flops_per_sequence(config, inputs_length=10, targets_length=4)
    enc_weights = 4 * 64 * 64 + 2 * 64 * 128
    dec_weights = 8 * 64 * 64 + 2 * 64 * 128 + 64 * 1024
    dense = 6 * (enc_weights * 10 + dec_weights * 4)
    attention = 6 * (2 * 64 * 10 * 10 + 2 * 64 * (4 + 10) * 4)
    assert flops == pytest.approx(dense + attention)


def test_progress_line_has_step_loss_rate_throughput_mfu_and_eta():
    stream = io.StringIO()
    progress = summaries.Progress(0, 100, 10, {"inputs": 100, "targets": 20}, flops_per_step=1e9,
                                  peak_flops=1e10, stream=stream)
    timing = {"timing/steps_per_second": 2.0, "timing/model_flops_utilization": 0.2}
    progress.report(10, {"loss": 40.0, "loss_per_nonpadding_target_token": 4.0,
                         "accuracy": 0.25, "learning_rate": 0.01}, timing)
    line = stream.getvalue().strip()
    assert line == ("step 10/100 | loss/token 4.0000 | acc 0.250 | lr 1.00e-02 | 2,000 tok/s | "
                    "MFU 20.0% | ETA 0m45s")
    assert set(progress.timing(12)) >= {"timing/steps_per_second",
                                        "timing/target_tokens_per_second",
                                        "timing/model_flops_utilization"}


def test_mean_over_the_summary_period():
    assert summaries.mean_metrics([{"loss": 1.0}, {"loss": 3.0}]) == {"loss": 2.0}


def test_cpu_peak_is_known_on_linux():
    assert summaries.peak_flops_total() > 1e9
