"""gin/clinical_*.gin with real t5x, run as the design card writes it: from the project root,
`python -m t5x.train --gin_file=gin/clinical_<variant>.gin [--gin_file=gin/partitioning/...]`
with no search-path flag, and from another folder with `--gin_search_paths=PROJECT_ROOT`.

Full-size configs resolve to each variant's settings; each variant shrunk to tiny sizes trains
a few steps on the synthetic task (base and sci from an imported checkpoint), the scratch run
resumes from its MODEL_DIR, and every result exports with `clinical-t5x export`.

Skipped unless `t5x` is importable; install it as t5x's README says (docs/tpu.md).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.t5x,
    pytest.mark.heavy,
    pytest.mark.skipif(importlib.util.find_spec("t5x") is None, reason="t5x is not importable"),
]

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "sci", "scratch", "large")
WITH_INIT = ("base", "sci")

# Tiny sizes on the synthetic task; everything else (optimizer, schedule, seeds, wiring) is
# the variant's own.
TINY = {
    "TRAIN_STEPS": "3",
    "MIXTURE_OR_TASK_NAME": "'synthetic_span_corruption'",
    "VOCABULARY": "'synthetic'",
    "TASK_FEATURE_LENGTHS": "{'inputs': 64, 'targets': 16}",
    "BATCH_SIZE": "8",
    "network.T5Config.vocab_size": "2176",  # the synthetic vocabulary's model size
    "network.T5Config.emb_dim": "32",
    "network.T5Config.num_heads": "2",
    "network.T5Config.head_dim": "16",
    "network.T5Config.mlp_dim": "64",
    "network.T5Config.num_encoder_layers": "1",
    "network.T5Config.num_decoder_layers": "1",
    "network.T5Config.dtype": "'float32'",
    "utils.SaveCheckpointConfig.period": "2",
    "train.eval_period": "2",
    "train.eval_steps": "1",
}

# Run as __main__ so that gin's `import __main__ as train_script` finds t5x's `train`.
PROBE = r"""
import json, sys
from t5x.train import train  # noqa: F401
import gin
from t5x import gin_utils, utils
from t5x.examples.t5 import network
from t5x.train import _DEFAULT_GIN_SEARCH_PATHS  # what `python -m t5x.train` always adds
MACROS = ["BATCH_SIZE", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "WARMUP_STEPS", "LEARNING_RATE",
          "DROPOUT_RATE", "DATA_SEED", "RANDOM_SEED", "NUM_PARTITIONS", "NUM_MICROBATCHES",
          "MIXTURE_OR_TASK_NAME", "VOCABULARY", "USE_CACHED_TASKS"]
out = []
for search_paths, files, bindings in json.loads(sys.argv[1]):
    gin.clear_config()
    gin_utils.parse_gin_flags(search_paths + _DEFAULT_GIN_SEARCH_PATHS, files, bindings)
    got = {m: gin.query_parameter("%" + m) for m in MACROS}
    got["T5Config"] = gin.get_bindings(network.T5Config)
    got["restore"] = {k: str(v) for k, v in gin.get_bindings(utils.RestoreCheckpointConfig).items()}
    got["save_dataset"] = gin.get_bindings(utils.SaveCheckpointConfig)["save_dataset"]
    got["lr"] = gin.get_bindings(utils.create_learning_rate_scheduler)
    out.append(got)
print("PROBE" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """One CPU device (not conftest's 8: t5x's CPU mesh would split the tiny heads 8 ways)."""
    cache = tmp_path_factory.mktemp("cache")
    xla_flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "").strip()
    return {**os.environ, "CLINICAL_T5X_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2",
            "CLINICAL_T5X_NO_REEXEC": "1", "XLA_FLAGS": xla_flags}


@pytest.fixture(scope="module")
def synthetic_vocab(env) -> str:
    """Builds the synthetic corpus and vocabulary once, in the cache the t5x runs read."""
    from clinical_t5x.data import synthetic_default

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLINICAL_T5X_CACHE", env["CLINICAL_T5X_CACHE"])
        return synthetic_default.vocab_dir()


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT,
        timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{argv[:4]} failed:\n{result.stderr[-4000:]}"
    return result


@pytest.mark.parametrize("preset", [[], ["gin/partitioning/v4-128.gin"]], ids=["alone", "preset"])
@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_full_size_configs_resolve_to_the_variant_settings(env, tmp_path, where, preset):
    """The literal command from the project root, and from another folder with the root as the
    search path: each variant (alone, and with a partitioning preset after it) resolves."""
    search_paths = [] if where == "root" else [str(ROOT)]
    cases = [(search_paths, [f"gin/clinical_{v}.gin", *preset],
              ["MODEL_DIR='/unused'", "INIT_CHECKPOINT='/init/checkpoint_0'"])
             for v in VARIANTS]
    result = run([sys.executable, "-c", PROBE, json.dumps(cases)], env,
                 cwd=ROOT if where == "root" else tmp_path)
    got = dict(zip(VARIANTS, json.loads(result.stdout.split("PROBE", 1)[1])))
    for variant, config in got.items():
        large = variant == "large"
        assert config["BATCH_SIZE"] == (96 if large else 256)
        assert config["TASK_FEATURE_LENGTHS"] == {"inputs": 512, "targets": 114}
        assert config["WARMUP_STEPS"] == 40000 and config["LEARNING_RATE"] == 1.0
        assert config["lr"]["factors"] == "constant * rsqrt_decay"
        assert config["DROPOUT_RATE"] == 0.0
        assert config["DATA_SEED"] is not None and config["RANDOM_SEED"] is not None
        assert config["NUM_PARTITIONS"] == (2 if preset else 1)  # v4-128: 32 x 2
        assert config["NUM_MICROBATCHES"] is None
        assert config["MIXTURE_OR_TASK_NAME"] == "mimic_span_corruption"
        assert config["USE_CACHED_TASKS"] is False
        assert config["T5Config"]["emb_dim"] == (1024 if large else 768)
        assert config["T5Config"]["num_encoder_layers"] == (24 if large else 12)
        assert config["T5Config"]["vocab_size"] == 32128
        if variant in WITH_INIT:
            assert config["restore"]["path"] == "/init/checkpoint_0"
            assert config["save_dataset"] is False
        else:
            assert config["restore"]["path"] == "[]"  # from scratch
            assert config["save_dataset"] is True
    assert [got[v]["VOCABULARY"] for v in VARIANTS] == ["t5", "t5", "mimic_lower", "mimic_cased"]


@pytest.fixture(scope="module")
def imported_checkpoint(tmp_path_factory, env) -> Path:
    """A tiny random T5 1.0 (HF layout) through `clinical-t5x import-hf`, standing in for T5-Base
    and SciFive at the tiny sizes."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("imported")
    config = transformers.T5Config(vocab_size=2176, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                   num_decoder_layers=1, num_heads=2, feed_forward_proj="relu",
                                   tie_word_embeddings=True, dropout_rate=0.0)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(root / "hf")
    run([sys.executable, "-m", "clinical_t5x.cli", "import-hf", "--hf", str(root / "hf"),
         "--out", str(root / "ckpt")], env)
    return root / "ckpt" / "checkpoint_0"


def t5x_train(variant: str, model_dir: Path, env: dict[str, str], preset: str | None = None,
              cwd: Path = ROOT, **overrides: str) -> subprocess.CompletedProcess:
    """`python -m t5x.train --gin_file=gin/clinical_<variant>.gin ...` exactly as the docs write
    it: from the project root with no search-path flag, or from `cwd` with the root as one."""
    bindings = {**TINY, "MODEL_DIR": f"'{model_dir}'", **overrides}
    search = [] if cwd == ROOT else [f"--gin_search_paths={ROOT}"]
    files = [f"gin/clinical_{variant}.gin"] + ([f"gin/partitioning/{preset}.gin"] if preset else [])
    return run([sys.executable, "-m", "t5x.train", *search, *(f"--gin_file={f}" for f in files),
                "--alsologtostderr", *(f"--gin.{k}={v}" for k, v in bindings.items())], env, cwd=cwd)


def steps_of(model_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in model_dir.glob("checkpoint_*"))


def train_losses(log: str) -> list[float]:
    return [float(m) for m in re.findall(r"collection=train accuracy=.*?\bloss=([0-9.]+)", log)]


@pytest.mark.parametrize("preset", [None, "v3-8"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_variant_trains_with_t5x_and_exports(variant, preset, tmp_path, env,
                                                   imported_checkpoint, synthetic_vocab):
    """Alone from the project root; with a preset (8 x 1, 2 microbatches) from another folder."""
    model_dir = tmp_path / "model"
    init = {"INIT_CHECKPOINT": f"'{imported_checkpoint}'"} if variant in WITH_INIT else {}
    cwd = ROOT if preset is None else tmp_path
    result = t5x_train(variant, model_dir, env, preset, cwd, **init)
    assert steps_of(model_dir) == [0, 2, 3]
    losses = train_losses(result.stderr)
    assert losses and all(np.isfinite(losses))
    assert "learning_rate=0.005" in result.stderr  # 1 / sqrt(40k warm-up steps)
    if variant in WITH_INIT:  # step 0 is the imported model, unchanged
        imported, first = _params(imported_checkpoint), _params(model_dir / "checkpoint_0")
        assert imported.keys() == first.keys()
        for name, value in imported.items():
            np.testing.assert_array_equal(first[name], value, err_msg=name)

    out = tmp_path / "hf"
    run([sys.executable, "-m", "clinical_t5x.cli", "export", "--checkpoint", str(model_dir),
         "--vocab", synthetic_vocab, "--out", str(out)], env)
    _check_export(out, model_dir / "checkpoint_3")


def _params(step_dir: Path) -> dict[str, np.ndarray]:
    from clinical_t5x.train import checkpoint_formats

    return checkpoint_formats.flatten(checkpoint_formats.read_params(step_dir))


def _check_export(hf_dir: Path, step_dir: Path) -> None:
    """The HF folder loads, holds the checkpoint's weights and computes finite logits."""
    import torch
    import transformers

    params = _params(step_dir)
    model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
    np.testing.assert_allclose(model.shared.weight.detach().numpy(),
                               params["token_embedder/embedding"], rtol=0, atol=0)
    np.testing.assert_allclose(
        model.encoder.block[0].layer[0].SelfAttention.q.weight.detach().numpy().T,
        params["encoder/layers_0/attention/query/kernel"], rtol=1e-6, atol=1e-7)
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ids = tokenizer("pt seen in clinic [DAY]", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids, decoder_input_ids=ids[:, :3]).logits
    assert torch.isfinite(logits).all()


def test_t5x_resumes_from_model_dir(tmp_path, env, synthetic_vocab):
    """A second run with more steps continues from the newest checkpoint (and its saved input
    position) instead of starting over: the watch loop in launch/tpu.sh relies on this."""
    model_dir = tmp_path / "model"
    t5x_train("scratch", model_dir, env)
    written = {p.name: p.stat().st_mtime_ns for p in model_dir.glob("checkpoint_*")}
    result = t5x_train("scratch", model_dir, env, TRAIN_STEPS="5")
    assert steps_of(model_dir)[-1] == 5
    for name, mtime in written.items():  # nothing redone
        assert (model_dir / name).stat().st_mtime_ns == mtime, name
    assert "[3] collection=train timing/init_or_restore_seconds" in result.stderr
    trained = re.findall(r"\[(\d+)\] collection=train accuracy=", result.stderr)
    assert [int(step) for step in trained] == [5]
