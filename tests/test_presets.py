"""gin/partitioning presets (TPU slices and GPU clusters): valid for every variant's batch,
within the memory the estimate allows, bound by the built-in trainer's gin, and their mesh
shapes train (scaled down to the 8 forced CPU devices) exactly like one device does."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from clinical_t5x.model import network, optim, steps
from clinical_t5x.model.partitioning import Partitioner

ROOT = Path(__file__).resolve().parents[1]
GIN = ROOT / "gin"
VARIANTS = ("base", "sci", "scratch", "large")


def _load_preset_table():
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "launch/preset_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


preset_table = _load_preset_table()
PRESETS = sorted([*preset_table.SLICES, *preset_table.GPU_CLUSTERS])


def test_one_preset_per_documented_slice_and_gpu_cluster():
    assert sorted(p.stem for p in (GIN / "partitioning").glob("*.gin")) == PRESETS
    assert sorted(preset_table.SLICES) == sorted(
        ["v3-8", "v4-8", "v4-32", "v4-128", "v5e-16", "v5e-64", "v5p-32"])
    assert sorted(preset_table.GPU_CLUSTERS) == ["gpu-4x8x80g", "gpu-8x48g", "gpu-8x80g"]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_preset_divides_every_variant_batch(name, variant):
    """data x model covers the slice; each microbatch splits evenly over the data axis."""
    devices = preset_table.devices(name)
    model_axis, microbatches = preset_table.preset(name)
    assert devices % model_axis == 0
    data = devices // model_axis
    batch = int(preset_table.gin_values(f"variants/{variant}.gin")["BATCH_SIZE"])
    assert batch % microbatches == 0 and (batch // microbatches) % data == 0


def test_estimates_fit_the_slices_memory():
    base, large = (preset_table.Model.from_variant(v) for v in ("base", "large"))
    for name, s in preset_table.SLICES.items():
        m, mb = preset_table.preset(name)
        for model in (base, large):
            assert model.hbm_gib(m, s.devices // m, mb) < 0.85 * s.hbm_gib, name


def test_gpu_estimates_fit_jaxs_share_of_the_gpu():
    base, large = (preset_table.Model.from_variant(v) for v in ("base", "large"))
    for name, c in preset_table.GPU_CLUSTERS.items():
        m, mb = preset_table.preset(name)
        budget = preset_table.GPU_MEMORY_FRACTION * c.hbm_gib
        for model in (base, large):
            assert model.hbm_gib(m, c.devices // m, mb, preset_table.remat(name)) < budget, name


def test_gpu_presets_rematerialise_exactly_where_the_estimate_needs_it():
    """Remat costs a second forward pass: on only when the estimate without it does not fit."""
    base, large = (preset_table.Model.from_variant(v) for v in ("base", "large"))
    for name, c in preset_table.GPU_CLUSTERS.items():
        m, mb = preset_table.preset(name)
        needed = max(model.hbm_gib(m, c.devices // m, mb) for model in (base, large))
        assert preset_table.remat(name) == (
            needed >= preset_table.GPU_MEMORY_FRACTION * c.hbm_gib), name


def test_remat_estimate_keeps_layer_inputs_plus_one_layer():
    """Hand-computed for a 2-layer model: inputs of every layer + the larger layer + logits."""
    model = preset_table.Model(d=8, f=16, h=2, layers=2, vocab=32, batch=4)
    li, lt = preset_table.INPUTS_LENGTH, preset_table.TARGETS_LENGTH
    enc = li * (8 * 8 + (2 * 16 + 2 * 2 * li)) * 2
    dec = lt * (12 * 8 + (2 * 16 + 2 * 2 * (li + lt))) * 2
    logits = lt * 32 * 8
    assert model.activation_bytes(1) == 2 * (enc + dec) + logits
    assert model.activation_bytes(1, remat=True) == (li + lt) * 2 * 8 * 2 + max(enc, dec) + logits
    assert model.hbm_gib(1, 1, 1, remat=True) < model.hbm_gib(1, 1, 1)


def test_docs_table_is_the_scripts_output():
    for doc in (ROOT / "docs" / "tpu.md", ROOT / "README.md", ROOT / "docs" / "gpu.md"):
        assert preset_table.table() in doc.read_text(), doc
    assert preset_table.gpu_table() in (ROOT / "docs" / "gpu.md").read_text()


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("name", PRESETS)
def test_builtin_trainer_gin_binds_the_preset(clean_gin, name):
    """gin/builtin/<variant>.gin + the preset -> the trainer's Partitioner and microbatches."""
    from clinical_t5x.train import trainer as train

    train.configure_gin(["gin/builtin/large.gin", f"gin/partitioning/{name}.gin"],
                        ["MODEL_DIR = '/unused'"], [str(GIN)])
    model_axis, microbatches = preset_table.preset(name)
    # Scaled down: the preset's model axis, the data axis over what 8 CPU devices leave.
    partitioner = Partitioner()
    assert dict(partitioner.mesh.shape) == {"data": 8 // model_axis, "model": model_axis}
    assert gin.query_parameter("NUM_MICROBATCHES/macro.value") == (
        None if microbatches == 1 else microbatches)
    assert network.T5Config().remat == preset_table.remat(name)


TINY = network.T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                        num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0,
                        mlp_activations=("gelu", "linear"))


def _batch(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = rng.integers(2, TINY.vocab_size, (rows, 8), dtype=np.int32)
    return {"encoder_input_tokens": rng.integers(2, TINY.vocab_size, (rows, 16), dtype=np.int32),
            "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
            "decoder_target_tokens": targets,
            "decoder_loss_weights": np.ones_like(targets, dtype=np.float32)}


def _one_step(partitioner: Partitioner, microbatches: int | None, batch):
    model = network.Transformer(TINY)
    optimizer = optim.make_optimizer(warmup_steps=10)
    state = steps.init_train_state(model, optimizer, partitioner, None, jax.random.PRNGKey(0))
    step = steps.make_train_step(model, optimizer, partitioner, num_microbatches=microbatches)
    sharded = {k: jax.device_put(v, partitioner.data_sharding) for k, v in batch.items()}
    state, metrics = step(state, sharded, jax.random.PRNGKey(1))
    return float(metrics["loss"]), jax.device_get(state.params)


@pytest.mark.slow
def test_preset_meshes_train_alike():
    """Every distinct mesh shape of the presets, scaled to the 8 forced CPU devices (model axis
    kept, data axis 8 // model), with its presets' microbatching, takes the same step."""
    assert jax.device_count() == 8, "tests/conftest.py forces 8 CPU devices"
    configs = {}  # model axis -> the largest microbatch count presets use with it
    for name in PRESETS:
        m, mb = preset_table.preset(name)
        configs[m] = max(mb, configs.get(m, 1))
    assert len(configs) >= 2, "the presets use both a pure data mesh and a model axis"
    rows = 8 * max(configs.values())
    batch = _batch(rows)
    results = [_one_step(Partitioner(num_partitions=m), mb if mb > 1 else None, batch)
               for m, mb in sorted(configs.items())]
    (loss, params), *others = results
    for other_loss, other_params in others:
        assert other_loss == pytest.approx(loss, rel=1e-5)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
            other_params, params)


def test_every_preset_names_its_mesh_in_its_header():
    for name in PRESETS:
        m, mb = preset_table.preset(name)
        data = preset_table.devices(name) // m
        text = (GIN / "partitioning" / f"{name}.gin").read_text()
        assert re.search(rf"Mesh data {data} x model {m};", text), name
