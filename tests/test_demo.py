"""The demo end to end at smoke-test size: every stage's folder, a trained checkpoint, resumable,
exported to a folder transformers loads, and the fill-in of a synthetic note shown."""

import contextlib
import io
import os
import stat

import gin
import pytest

from clinical_t5x.train import checkpoints

from clinical_t5x import demo

from clinical_t5x.hf import fill_in
from test_owner_only import assert_owner_only

pytestmark = pytest.mark.heavy  # every stage, with a trained and exported model: minutes

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


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One smoke-size demo (2 steps), its return value and what it printed to stderr."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    stderr = io.StringIO()
    umask = os.umask(0o022)  # a usual umask: owner-only must not depend on the caller's
    try:
        with contextlib.redirect_stderr(stderr):
            done = demo.run(out, notes=1000, vocab_size=500, steps=2, extra_bindings=SMALL_MODEL)
    finally:
        os.umask(umask)
        gin.clear_config()
    return out, done, stderr.getvalue()


def test_demo_runs_every_stage_and_trains(demo_run):
    out, done, printed = demo_run
    result = done["train"]
    assert result.exit_code == 0 and result.step == 2
    assert set(result.eval_metrics) >= {"loss", "accuracy"}
    assert (out / "prepared" / "manifest.json").is_file()
    assert (out / "vocab" / "spiece.model").is_file()
    assert checkpoints.latest_step(out / "model") == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert_owner_only(out)  # notes, shards, vocabulary, checkpoints, event files, HF folder
    assert [f"[{i}/6]" in printed for i in range(1, 7)] == [True] * 6


def test_demo_exports_a_folder_transformers_loads(demo_run):
    out, done, _ = demo_run
    assert done["hf"] == out / "hf"
    assert "checkpoint_2" in (out / "hf" / "README.md").read_text()
    assert stat.S_IMODE((out / "hf" / "model.safetensors").stat().st_mode) == 0o600
    _, _, problems = fill_in.load_hf(out / "hf")
    assert problems == 0
    # complete and current: a second export call keeps the folder as it is
    before = (out / "hf" / "model.safetensors").stat().st_mtime_ns
    assert demo.export_model(out, out / "model", out / "vocab") == out / "hf"
    assert (out / "hf" / "model.safetensors").stat().st_mtime_ns == before


def test_demo_shows_the_fill_in_of_a_synthetic_note(demo_run):
    _, done, printed = demo_run
    shown = done["fill_in"]
    assert shown.missing_weights == 0
    assert shown.max_logit_difference < 1e-4  # the exported model is the JAX model
    assert len(shown.note.spans) == fill_in.NUM_SPANS
    assert "SYNTHETIC note" in printed
    assert shown.note.inputs in " ".join(printed.split())  # wrapped over a few lines
    for i, span in enumerate(shown.note.spans):
        assert f"<extra_id_{i}>" in shown.note.inputs
        assert any(line.strip().startswith(f"<extra_id_{i}>") and repr(span) in line
                   for line in printed.splitlines())
    assert "HF vs JAX logits" in printed


def test_fill_in_without_torch_says_how_to_install_it(demo_run, monkeypatch, capsys):
    out, _, _ = demo_run
    monkeypatch.setattr(demo, "torch_available", lambda: False)
    assert demo.show_fill_in(out / "hf", out / "model", seed=0) is None
    assert demo.HF_INSTALL_HINT in capsys.readouterr().err


@pytest.mark.heavy
def test_demo_finetune_stage_scores_the_demo_model_on_synthetic_mednli(demo_run):
    out, done, _ = demo_run
    try:
        table = demo.finetune_stage(out, done["vocab"], "mednli", steps=2, seed=0)
    finally:
        gin.clear_config()
    assert table == out / "finetune_mednli" / "results.md"
    assert "| accuracy |" in table.read_text()
    assert (out / "downstream" / "mednli" / "mli_test_v1.jsonl").is_file()
