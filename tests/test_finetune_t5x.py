"""gin/finetune_<task>.gin and gin/finetune_test.gin resolve with real t5x from the project
root: t5x's finetune/eval run configs with the paper's recipe and the project's tasks.

Skipped unless `t5x` is importable (docs/tpu.md says how to install it).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.t5x,
    pytest.mark.heavy,
    pytest.mark.skipif(importlib.util.find_spec("t5x") is None, reason="t5x is not importable"),
]

ROOT = Path(__file__).resolve().parents[1]
MODEL_GIN = "t5x/examples/t5/t5_1_0/base.gin"
# Run as __main__ so that gin's `import __main__ as train_script` finds t5x's entry point.
PROBE = r"""
import json, sys
from t5x.{module} import {entry}  # noqa: F401
import gin
from t5x import gin_utils, utils
from t5x.{module} import _DEFAULT_GIN_SEARCH_PATHS
files, bindings = json.loads(sys.argv[1])
gin_utils.parse_gin_flags(_DEFAULT_GIN_SEARCH_PATHS, files, bindings)
got = {{m: gin.query_parameter("%" + m) for m in json.loads(sys.argv[2])}}
try:  # a training config only (t5x's eval config has no schedule)
    got["lr"] = gin.get_bindings(utils.create_learning_rate_scheduler)
except ValueError:
    got["lr"] = None
got["restore"] = {{k: str(v) for k, v in gin.get_bindings(utils.RestoreCheckpointConfig).items()}}
print("PROBE" + json.dumps(got, default=str))
"""


def probe(module: str, entry: str, files: list[str], bindings: list[str],
          macros: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, entry=entry),
         json.dumps([files, bindings]), json.dumps(macros)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])


@pytest.mark.parametrize("task, inputs", [("mednli", 256), ("radqa", 1024), ("clip", 512)])
def test_finetune_gin_resolves_to_the_paper_recipe(task, inputs):
    got = probe("train", "train", [MODEL_GIN, f"gin/finetune_{task}.gin"],
                ["INIT_CHECKPOINT='/init/checkpoint_0'", "VOCABULARY='t5'", "MODEL_DIR='/m'"],
                ["MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "DROPOUT_RATE",
                 "USE_CACHED_TASKS", "INITIAL_CHECKPOINT_PATH", "INIT_CHECKPOINT"])
    assert got["MIXTURE_OR_TASK_NAME"] == task
    assert got["TASK_FEATURE_LENGTHS"]["inputs"] == inputs
    assert got["DROPOUT_RATE"] == 0.1 and got["USE_CACHED_TASKS"] is False
    # t5x's finetune.gin restores INITIAL_CHECKPOINT_PATH: the project's INIT_CHECKPOINT.
    assert "INIT_CHECKPOINT" in got["INITIAL_CHECKPOINT_PATH"]
    assert got["INIT_CHECKPOINT"] == "/init/checkpoint_0"
    assert got["lr"]["factors"] == "constant" and got["lr"]["base_learning_rate"] == 1e-4
    assert "param_states" in got["restore"]["assignment_map"]


def test_test_gin_resolves_for_t5x_eval():
    got = probe("eval", "evaluate", [MODEL_GIN, "gin/finetune_test.gin"],
                ["MIXTURE_OR_TASK_NAME='clip'", "VOCABULARY='t5'", "CHECKPOINT_PATH='/c'",
                 "EVAL_OUTPUT_DIR='/e'"], ["MIXTURE_OR_TASK_NAME", "CHECKPOINT_PATH"])
    assert got["MIXTURE_OR_TASK_NAME"] == "clip" and got["CHECKPOINT_PATH"] == "/c"


# A T5 1.0 (the model gin's architecture) far smaller than base, and inputs to match.
MICRO_T5 = {"emb_dim": 32, "num_heads": 2, "head_dim": 16, "mlp_dim": 64,
            "num_encoder_layers": 1, "num_decoder_layers": 1}


@pytest.fixture
def one_device(monkeypatch):
    """t5x subprocesses on one CPU device (conftest's 8 would split the tiny heads 8 ways)."""
    import os

    from clinical_t5x.tasks.downstream import DIR_ENVS

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "").strip())
    monkeypatch.setenv("CLINICAL_T5X_NO_REEXEC", "1")
    for name in DIR_ENVS.values():  # `finetune` sets its task's
        monkeypatch.delenv(name, raising=False)
    yield
    import gin

    gin.clear_config()


# Per task: synthetic split sizes (MedNLI pairs, RadQA reports, CLIP documents), feature
# lengths (the RadQA/CLIP context budget to match: windows and contexts cut short), and metrics
# the test split must report.
END_TO_END = {
    "mednli": ({"mednli": (32, 8, 8)}, {"inputs": 128, "targets": 16}, {"accuracy", "macro_f1"}),
    "radqa": ({"radqa": (8, 3, 3)}, {"inputs": 128, "targets": 16}, {"em", "f1"}),
    "clip": ({"clip": (3, 1, 1)}, {"inputs": 128, "targets": 32}, {"macro_f1", "micro_f1"}),
}


@pytest.mark.parametrize("task", sorted(END_TO_END))
def test_finetune_command_runs_end_to_end_with_t5x(tmp_path, one_device, task):
    """`clinical-t5x finetune <task> --engine t5x`: t5x.train with validation metrics at every
    checkpoint, the best step scored on test with t5x.eval, results written."""
    import jax
    from flax import linen as nn

    from clinical_t5x.data import synth_downstream, synthetic_default
    from clinical_t5x.eval import finetune
    from clinical_t5x.model import network
    from clinical_t5x.text import vocab
    from clinical_t5x.train import checkpoint_formats

    sizes, lengths, reported = END_TO_END[task]
    vocab_dir = synthetic_default.vocab_dir()
    config = network.T5Config(vocab_size=vocab.load(vocab_dir).model_vocab_size,
                              mlp_activations=("relu",), logits_via_embedding=True, **MICRO_T5)
    params = nn.unbox(network.init_params(network.Transformer(config), jax.random.PRNGKey(0)))
    init = checkpoint_formats.write_params_checkpoint(jax.device_get(params), tmp_path / "init")
    synth_downstream.write_downstream(tmp_path / "data", seed=0, sizes=sizes)
    model = {**MICRO_T5, "vocab_size": config.vocab_size, "dtype": "'float32'"}
    budget = ([] if task == "mednli" else
              [f"--gin.clinical_t5x.tasks.context_tokens.{task}={lengths['inputs']}"])
    code = finetune.main([
        task, "--engine", "t5x", f"--gin_file={MODEL_GIN}", "--init", str(init),
        "--vocab", vocab_dir, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
        "--seeds", "3", "--steps", "2", "--eval_every", "1", "--batch_size", "8",
        f"--gin.TASK_FEATURE_LENGTHS={lengths!r}", *budget,
        *[f"--gin.network.T5Config.{name}={value}" for name, value in model.items()]])
    assert code == 0
    run_dir = tmp_path / "out" / "runs" / "100pct_seed3"
    run = json.loads((run_dir / "result.json").read_text())
    validation = finetune._t5x_metrics(run_dir / "inference_eval")
    assert run["best_step"] in validation and validation[run["best_step"]] == run["validation"]
    assert reported <= set(run["test"])
    assert (run_dir / "test_eval").is_dir()
    assert (tmp_path / "out" / "results.md").is_file()
