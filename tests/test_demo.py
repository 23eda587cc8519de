"""The demo end to end at smoke-test size: every stage's folder, a trained checkpoint, resumable."""

import stat

import gin

from clinical_t5x import checkpoints, demo

SMALL_MODEL = [
    "BATCH_SIZE=8",
    "TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
    "EVAL_PERIOD=2",
    "CHECKPOINT_PERIOD=2",
    "train.eval_steps=1",
    "train.log_period=1",
    "network.T5Config.emb_dim=32",
    "network.T5Config.num_heads=2",
    "network.T5Config.head_dim=16",
    "network.T5Config.mlp_dim=64",
    "network.T5Config.num_encoder_layers=1",
    "network.T5Config.num_decoder_layers=1",
]


def test_demo_runs_every_stage_and_trains(tmp_path):
    out = tmp_path / "demo"
    try:
        done = demo.run(out, notes=1000, vocab_size=500, steps=2, extra_bindings=SMALL_MODEL)
    finally:
        gin.clear_config()
    result = done["train"]
    assert result.exit_code == 0 and result.step == 2
    assert set(result.eval_metrics) >= {"loss", "accuracy"}
    assert (out / "prepared" / "manifest.json").is_file()
    assert (out / "vocab" / "spiece.model").is_file()
    assert checkpoints.latest_step(out / "model") == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
