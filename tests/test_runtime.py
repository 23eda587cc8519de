"""CPU runtime settings: CPU detection, dtype and XLA flags by machine, the allocator re-exec."""
import json
import os
import subprocess
import sys

import pytest

from clinical_t5x.train import runtime

INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
vendor_id\t: GenuineIntel
"""
AMD_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu avx2 fma
"""


def test_parse_cpuinfo_reads_vendor_model_and_flags():
    intel = runtime.parse_cpuinfo(INTEL_AMX)
    assert (intel.vendor, intel.model) == ("GenuineIntel",
                                           "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz")
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= intel.flags
    assert intel.has_bf16_matrix_unit
    amd = runtime.parse_cpuinfo(AMD_ZEN3)
    assert amd.vendor == "AuthenticAMD" and not amd.has_bf16_matrix_unit
    assert runtime.parse_cpuinfo("").model == "unknown"


@pytest.mark.parametrize("cpuinfo, on_cpu, dtype", [
    (INTEL_AMX, True, "bfloat16"), (AMD_ZEN3, True, "float32"),
    (AMD_ZEN3.replace("fma", "fma avx512_bf16"), True, "bfloat16"),
    (AMD_ZEN3, False, "bfloat16")])
def test_preferred_dtype_is_bf16_only_where_bf16_has_hardware(monkeypatch, cpuinfo, on_cpu,
                                                              dtype):
    monkeypatch.setattr(runtime, "this_cpu", lambda: runtime.parse_cpuinfo(cpuinfo))
    monkeypatch.setattr(runtime, "backend_is_cpu", lambda env=None: on_cpu)
    assert runtime.preferred_activation_dtype() == dtype


def test_xla_flags_only_for_float32_and_ynn_only_where_jaxlib_knows_it(monkeypatch):
    monkeypatch.setattr(runtime, "jaxlib_knows_ynn_flag", lambda: True)
    assert runtime.xla_cpu_flags("float32") == [runtime.YNN_FLAG, runtime.TREE_REDUCTION_FLAG]
    assert runtime.xla_cpu_flags("bfloat16") == []
    monkeypatch.setattr(runtime, "jaxlib_knows_ynn_flag", lambda: False)
    assert runtime.xla_cpu_flags("float32") == [runtime.TREE_REDUCTION_FLAG]


class _Dist:
    def __init__(self, name):
        self.metadata = {"Name": name}


@pytest.mark.parametrize("platforms, installed, expected", [
    ("cpu", ["jax-cuda12-plugin"], True), ("cuda", [], False), ("tpu,cpu", [], False),
    ("", ["numpy", "jaxlib"], True), ("", ["jaxlib", "jax-cuda12-plugin"], False),
    ("", ["libtpu"], False)])
def test_backend_is_cpu_from_jax_platforms_or_installed_plugins(monkeypatch, platforms,
                                                                installed, expected):
    monkeypatch.setattr(runtime.importlib.metadata, "distributions",
                        lambda: [_Dist(name) for name in installed])
    assert runtime.backend_is_cpu({"JAX_PLATFORMS": platforms}) is expected


def test_runtime_env_adds_allocator_settings_but_keeps_user_settings(monkeypatch):
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: None)
    env = runtime.cpu_runtime_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"  # flags: in-process
    assert env["GLIBC_TUNABLES"] == runtime.GLIBC_TUNABLES
    kept = runtime.cpu_runtime_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: "/x/libtcmalloc_minimal.so.4")
    assert "LD_PRELOAD" not in runtime.cpu_runtime_env({})  # tcmalloc only on request
    preload = runtime.cpu_runtime_env({runtime.TCMALLOC_ENV: "1"})
    assert preload["LD_PRELOAD"] == "/x/libtcmalloc_minimal.so.4"
    assert "GLIBC_TUNABLES" not in preload


SCRIPT = """import json, os, sys
from clinical_t5x.train import runtime
runtime.configure_cpu_runtime()
dtype, start_backend = sys.argv[1], sys.argv[2] == "started"
if start_backend:
    import jax
    jax.devices()
added = runtime.configure_xla_flags(dtype)
inline = runtime.configure_cpu_dispatch()
import jax
import jax.numpy as jnp
jnp.ones(4).sum().block_until_ready()  # XLA accepted the flags
print(json.dumps({k: os.environ.get(k) for k in ('XLA_FLAGS', 'GLIBC_TUNABLES')}
                 | {'argv': sys.argv[1:], 'added': added, 'inline': inline,
                    'async': jax.config.read('jax_cpu_enable_async_dispatch')}))
"""


def run_python(tmp_path, script, *args, **env_overrides):
    """`script` in a fresh CPU process without any runtime setting of ours in its environment
    but `env_overrides`: its last stdout line as JSON, and its stderr."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "GLIBC_TUNABLES", "JAX_PLATFORMS",
                        runtime.OPT_OUT_ENV, "CLINICAL_T5X_RUNTIME_CONFIGURED")}
    env.update(CLINICAL_T5X_CACHE=str(tmp_path), JAX_PLATFORMS="cpu", **env_overrides)
    out = subprocess.run([sys.executable, "-c", script, *args], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def run_script(tmp_path, dtype="float32", backend="not-started", **env_overrides):
    return run_python(tmp_path, SCRIPT, dtype, backend, **env_overrides)


@pytest.mark.slow
def test_reexec_once_for_the_allocator_then_flags_by_dtype(tmp_path):
    seen, stderr = run_script(tmp_path, "float32")
    assert seen["GLIBC_TUNABLES"] == runtime.GLIBC_TUNABLES
    assert seen["argv"] == ["float32", "not-started"]  # arguments survive the re-exec
    assert stderr.count("re-executing once") == 1
    knows = json.loads((tmp_path / "xla_cpu_flags.json").read_text())
    assert (tmp_path / "xla_cpu_flags.json").stat().st_mode & 0o077 == 0
    assert seen["added"] == ([runtime.YNN_FLAG] if list(knows.values()) == [True] else []) + [
        runtime.TREE_REDUCTION_FLAG]
    assert (seen["XLA_FLAGS"] or "") == " ".join(seen["added"])
    assert seen["inline"] and not seen["async"]
    bf16, _ = run_script(tmp_path, "bfloat16")
    assert bf16["added"] == [] and bf16["XLA_FLAGS"] is None and bf16["inline"]


@pytest.mark.slow
def test_user_flags_win_and_a_started_backend_is_left_alone(tmp_path):
    user = "--xla_cpu_experimental_onednn_fusion_type=dot"
    seen, _ = run_script(tmp_path, "float32", XLA_FLAGS=user)
    assert seen["added"] == [runtime.TREE_REDUCTION_FLAG]  # their fusion flag replaces ours
    assert seen["XLA_FLAGS"] == f"{user} {runtime.TREE_REDUCTION_FLAG}"
    user = "--xla_disable_hlo_passes=fusion"
    seen, _ = run_script(tmp_path, "float32", XLA_FLAGS=user)
    assert runtime.TREE_REDUCTION_FLAG not in seen["added"]
    assert seen["XLA_FLAGS"].startswith(user) and seen["XLA_FLAGS"].count("disable_hlo") == 1
    late, _ = run_script(tmp_path, "float32", "started")
    assert late["added"] == [] and late["XLA_FLAGS"] is None
    assert not late["inline"] and late["async"]  # the CPU client already queues


def test_opt_out(tmp_path):
    seen, stderr = run_script(tmp_path, CLINICAL_T5X_NO_REEXEC="1")
    assert seen["GLIBC_TUNABLES"] is None and seen["XLA_FLAGS"] is None
    assert seen["added"] == [] and "re-executing" not in stderr
    assert not seen["inline"] and seen["async"]


def test_never_changes_the_pytest_process():
    before = dict(os.environ)
    assert runtime.configure_cpu_runtime() is False
    assert runtime.configure_xla_flags("float32") == []
    assert runtime.configure_cpu_dispatch() is False
    assert dict(os.environ) == before


STEPS_SCRIPT = """import json
import numpy as np
from clinical_t5x.train import runtime
inline = runtime.configure_cpu_dispatch()
import jax
from clinical_t5x.model import network, optim, partitioning, steps
config = network.T5Config(vocab_size=1024, emb_dim=64, num_heads=2, head_dim=32, mlp_dim=256,
                          num_encoder_layers=1, num_decoder_layers=1, dtype="float32")
model, optimizer = network.Transformer(config), optim.make_optimizer(warmup_steps=100)
partitioner = partitioning.Partitioner(num_partitions=1)
state = steps.init_train_state(model, optimizer, partitioner, None, jax.random.PRNGKey(0))
jitted = steps.make_train_step(model, optimizer, partitioner).jitted
tokens = np.random.default_rng(0).integers(2, 1024, (16, 320)).astype(np.int32)
batch = partitioning.global_batch_from_local({
    "encoder_input_tokens": tokens[:, :256], "decoder_target_tokens": tokens[:, 256:],
    "decoder_input_tokens": tokens[:, 255:-1],
    "decoder_loss_weights": np.ones((16, 64), np.float32)}, partitioner.data_sharding)
rng = jax.random.PRNGKey(1)
train_step = jitted.lower(state, batch, rng).compile()
temp = train_step.memory_analysis().temp_size_in_bytes
def peak():
    lines = open("/proc/self/status").read().splitlines()
    return next(int(line.split()[1]) * 1024 for line in lines if line.startswith("VmHWM"))
state, metrics = train_step(state, batch, rng)
jax.block_until_ready(metrics)
before = peak()
for _ in range(8):  # queued back to back, as the trainer does between log steps
    state, metrics = train_step(state, batch, rng)
jax.block_until_ready(metrics)
print(json.dumps({"inline": inline, "temp": temp, "growth": peak() - before}))
"""


def run_steps(tmp_path, **env_overrides):
    return run_python(tmp_path, STEPS_SCRIPT, GLIBC_TUNABLES=runtime.GLIBC_TUNABLES,
                      **env_overrides)[0]


@pytest.mark.slow
def test_queued_steps_hold_one_temporary_block_at_a_time(tmp_path):
    """Under the allocator settings (a never-trimmed heap) each queued train step's XLA
    temporary block would stay resident as one more copy; inline dispatch keeps one."""
    seen = run_steps(tmp_path)
    assert seen["inline"] and seen["temp"] > 50e6
    assert seen["growth"] < 0.2 * seen["temp"]


@pytest.mark.heavy
def test_without_inline_dispatch_queued_steps_keep_more_blocks(tmp_path):
    """Why the setting is there (and that the test above can fail): opted out, the same eight
    queued steps leave more than one extra temporary block resident."""
    seen = run_steps(tmp_path, **{runtime.OPT_OUT_ENV: "1"})
    assert not seen["inline"]
    assert seen["growth"] > 0.8 * seen["temp"]
