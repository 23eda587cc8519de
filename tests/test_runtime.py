"""CPU runtime re-exec: backend detection, environment, one re-exec with a log line, opt-out."""
import json
import os
import subprocess
import sys

import pytest

from clinical_t5x.train import runtime

SCRIPT = ("import json, os, sys\n"
          "from clinical_t5x.train import runtime\n"
          "runtime.configure_cpu_runtime()\n"
          "print(json.dumps({k: os.environ.get(k) for k in "
          "('XLA_FLAGS', 'GLIBC_TUNABLES', 'LD_PRELOAD')} | {'argv': sys.argv[1:]}))\n")


@pytest.mark.parametrize("platforms, expected", [("cpu", True), ("cuda", False),
                                                 ("tpu,cpu", False), ("CPU,cuda", True)])
def test_backend_is_cpu_from_jax_platforms(platforms, expected):
    assert runtime.backend_is_cpu({"JAX_PLATFORMS": platforms}) is expected


class _Dist:
    def __init__(self, name: str):
        self.metadata = {"Name": name}


@pytest.mark.parametrize("installed, expected", [
    (["jax", "jaxlib", "numpy"], True),
    (["jax", "jax-cuda12-plugin", "jax-cuda12-pjrt"], False),
    (["jax", "libtpu"], False),
    (["jax", "jax_rocm60_plugin"], False),
])
def test_backend_is_cpu_from_installed_plugins(monkeypatch, installed, expected):
    """Without JAX_PLATFORMS the installed accelerator plugins decide (whatever this machine has)."""
    monkeypatch.setattr(runtime.importlib.metadata, "distributions",
                        lambda: [_Dist(name) for name in installed])
    assert runtime.backend_is_cpu({}) is expected


def test_runtime_env_adds_allocator_settings_and_flag_but_keeps_user_settings(monkeypatch):
    monkeypatch.setattr(runtime, "jaxlib_knows_ynn_flag", lambda: True)
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: None)
    env = runtime.cpu_runtime_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                        runtime.YNN_FLAG]
    assert env["GLIBC_TUNABLES"] == runtime.GLIBC_TUNABLES
    kept = runtime.cpu_runtime_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: "/x/libtcmalloc_minimal.so.4")
    assert "LD_PRELOAD" not in runtime.cpu_runtime_env({})  # tcmalloc only on request
    preload = runtime.cpu_runtime_env({runtime.TCMALLOC_ENV: "1"})
    assert preload["LD_PRELOAD"] == "/x/libtcmalloc_minimal.so.4"
    assert "GLIBC_TUNABLES" not in preload


def run_script(tmp_path, **env_overrides):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "GLIBC_TUNABLES", "JAX_PLATFORMS", "LD_PRELOAD")}
    # CPU named explicitly, so the outcome does not depend on the plugins installed here.
    env.update({"CLINICAL_T5X_CACHE": str(tmp_path), "JAX_PLATFORMS": "cpu", **env_overrides})
    out = subprocess.run([sys.executable, "-c", SCRIPT, "--flag", "x"], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout), out.stderr


def test_reexec_once_with_settings_and_a_log_line(tmp_path):
    seen, stderr = run_script(tmp_path)
    assert seen["GLIBC_TUNABLES"] == runtime.GLIBC_TUNABLES
    assert seen["argv"] == ["--flag", "x"]  # arguments survive the re-exec
    assert stderr.count("re-executing once") == 1
    knows = json.loads((tmp_path / "xla_cpu_flags.json").read_text())
    assert list(knows.values()) == [runtime.YNN_FLAG in (seen["XLA_FLAGS"] or "")]


def test_opt_out(tmp_path):
    seen, stderr = run_script(tmp_path, CLINICAL_T5X_NO_REEXEC="1")
    assert seen["GLIBC_TUNABLES"] is None and seen["XLA_FLAGS"] is None
    assert "re-executing" not in stderr


def test_an_accelerator_backend_is_left_alone(tmp_path):
    seen, stderr = run_script(tmp_path, JAX_PLATFORMS="cuda")
    assert seen["GLIBC_TUNABLES"] is None and seen["XLA_FLAGS"] is None
    assert "re-executing" not in stderr
    assert not (tmp_path / "xla_cpu_flags.json").exists()  # not even probed
    assert runtime.configure_cpu_runtime() is False  # and never inside pytest (this process)
