"""The one FLOP count (checked against a hand count) and the one peak-FLOP/s table."""
import pytest

from clinical_t5x.model import flops, network


def test_training_flops_match_a_hand_count_for_a_small_config():
    # emb 8, 2 heads x 4 = 8 joined, ReLU MLP 16, 1+1 layers, vocab 32, 10 inputs, 4 targets.
    config = network.T5Config(vocab_size=32, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                              num_encoder_layers=1, num_decoder_layers=1,
                              mlp_activations=("relu",))
    # Encoder, per input token: q,k,v,o 4 x (2 x 8 x 8) = 512; MLP wi + wo 2 x (2 x 8 x 16) = 512;
    # scores + mixing 2 x (2 x 10 x 8) = 320. Ten tokens: 13,440.
    encoder = 10 * (512 + 512 + 320)
    # Decoder, per target token: self q,k,v,o 512; cross q,o 256; MLP 512; self scores +
    # mixing 2 x (2 x 4 x 8) = 128; cross 2 x (2 x 10 x 8) = 320; logits 2 x 8 x 32 = 512.
    # Cross k,v run on the ten INPUT tokens: 10 x 2 x (2 x 8 x 8) = 2,560.
    decoder = 4 * (512 + 256 + 512 + 128 + 320 + 512) + 2560
    assert flops.training_flops_per_example(config, 10, 4) == 3 * (encoder + decoder)


def test_gated_mlp_counts_each_input_projection():
    relu = network.T5Config(mlp_activations=("relu",))
    gated = network.T5Config(mlp_activations=("gelu", "linear"))
    extra = 3 * 2 * relu.emb_dim * relu.mlp_dim * (
        relu.num_encoder_layers * 512 + relu.num_decoder_layers * 114)
    assert (flops.training_flops_per_example(gated, 512, 114)
            - flops.training_flops_per_example(relu, 512, 114)) == extra


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-40GB", 312e12), ("NVIDIA A10G", 125e12), ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12), ("TPU v5 lite", 197e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("TPU v4", 275e12), ("cpu", None)])
def test_device_peak_takes_the_most_specific_name(name, peak):
    assert flops.device_peak_flops(name) == peak


CPUINFO = """processor\t: 0
flags\t\t: fpu sse2 avx2 fma{extra}
cpu MHz\t\t: 2000.000
processor\t: 1
cpu MHz\t\t: 2500.000
"""


def test_cpu_peak_is_cores_times_fastest_clock_times_fma_width():
    assert flops.cpu_peak_flops(CPUINFO.format(extra=""), cores=2) == 2 * 2500e6 * 32
    assert flops.cpu_peak_flops(CPUINFO.format(extra=" avx512f"), cores=1) == 2500e6 * 64
    no_fma = CPUINFO.format(extra="").replace(" fma", "")
    assert flops.cpu_peak_flops(no_fma, cores=1) == 2500e6 * 8


def test_cpu_peak_is_unknown_without_a_clock():
    text = "\n".join(line for line in CPUINFO.format(extra="").splitlines()
                     if not line.startswith("cpu MHz"))
    assert flops.cpu_peak_flops(text, cores=2) is None
