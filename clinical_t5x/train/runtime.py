"""Process-level settings that make XLA's CPU runtime fast, applied by re-executing once.

With glibc's default malloc XLA's CPU runtime takes fresh pages every step (its multi-GB temp
block is mmapped and unmapped each step: page faults, a fifth of CPU time in the kernel).
Our glibc tunables serve everything below 256 MiB from one never-trimmed heap and let only
the big temp block be mmapped, backed by transparent huge pages (512x fewer faults). Measured
on T5 1.1 "small" (2 cores, CPU seconds per step, peak RSS): default 7.6 s / 3.5 GB; no mmap
at all 6.6 s / 8.4 GB (the heap fragments around the temp block); ours 6.3 s / 3.5 GB.
tcmalloc (7.6 GB on small) only on request (CLINICAL_T5X_TCMALLOC=1).
`--xla_cpu_experimental_ynn_fusion_type=dot` adds 12-29% and also fixes XLA's pathological
leading-axis reductions. Both act only at process start, hence the single re-exec. Nothing
here applies to GPU/TPU. Opt out with CLINICAL_T5X_NO_REEXEC=1. See docs/performance.md.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

OPT_OUT_ENV = "CLINICAL_T5X_NO_REEXEC"
_DONE_ENV = "CLINICAL_T5X_RUNTIME_CONFIGURED"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
GLIBC_TUNABLES = ":".join([
    "glibc.malloc.hugetlb=1",  # THP for malloc's mmaps (glibc >= 2.35; older ones ignore it)
    "glibc.malloc.arena_max=1",
    f"glibc.malloc.mmap_threshold={256 << 20}",
    f"glibc.malloc.trim_threshold={64 << 30}",
])
TCMALLOC_ENV = "CLINICAL_T5X_TCMALLOC"
TCMALLOC_NAME = "libtcmalloc_minimal.so.4"
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib")
_ACCELERATOR_DISTS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def backend_is_cpu(env: dict[str, str] | None = None) -> bool:
    """Whether JAX will run on CPU, decided without importing jax (which would fix its flags)."""
    env = os.environ if env is None else env
    platforms = env.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] == "cpu"
    names = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
    return not any(name.lower().startswith(_ACCELERATOR_DISTS) for name in names)


def _cache_file() -> Path:
    root = os.environ.get("CLINICAL_T5X_CACHE") or Path.home() / ".cache" / "clinical_t5x"
    return Path(root) / "xla_cpu_flags.json"


def jaxlib_knows_ynn_flag() -> bool:
    """Probe once per jaxlib version in a tiny subprocess (XLA aborts on unknown flags)."""
    version = importlib.metadata.version("jaxlib")
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if version not in known:
        env = {**os.environ, "XLA_FLAGS": YNN_FLAG, "JAX_PLATFORMS": "cpu", OPT_OUT_ENV: "1"}
        probe = subprocess.run(
            [sys.executable, "-c", "import jax.numpy as j; j.zeros(2).block_until_ready()"],
            env=env, capture_output=True, timeout=300, check=False)
        known[version] = probe.returncode == 0
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known))
        except OSError:
            log.debug("could not cache the XLA flag probe in %s", cache)
    return bool(known[version])


def find_tcmalloc() -> str | None:
    for directory in _LIB_DIRS:
        path = Path(directory) / TCMALLOC_NAME
        if path.exists():
            return str(path)
    return None


def cpu_runtime_env(env: dict[str, str]) -> dict[str, str]:
    """The environment to re-exec with (allocator + XLA flag), leaving user settings alone."""
    new = dict(env)
    tcmalloc = find_tcmalloc() if env.get(TCMALLOC_ENV) == "1" else None
    if tcmalloc and TCMALLOC_NAME not in new.get("LD_PRELOAD", ""):
        new["LD_PRELOAD"] = ":".join(p for p in (tcmalloc, new.get("LD_PRELOAD")) if p)
    elif not tcmalloc and "GLIBC_TUNABLES" not in new:
        new["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    flags = new.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags and jaxlib_knows_ynn_flag():
        new["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    new[_DONE_ENV] = "1"
    return new


def configure_cpu_runtime() -> bool:
    """Re-exec this process once with the fast CPU settings; returns False when not applicable.

    Call at the very start of a command's main(), before jax is used. Skipped when opted out
    (CLINICAL_T5X_NO_REEXEC=1), when already done, inside pytest (re-exec would replace the
    test runner), and when an accelerator backend will be used.
    """
    env = dict(os.environ)
    if env.get(OPT_OUT_ENV) == "1" or env.get(_DONE_ENV) == "1" or "pytest" in sys.modules:
        return False
    if not backend_is_cpu(env):
        return False
    new = cpu_runtime_env(env)
    changed = sorted(k for k in ("LD_PRELOAD", "GLIBC_TUNABLES", "XLA_FLAGS")
                     if new.get(k) != env.get(k))
    if not changed:
        return False
    log.warning("clinical_t5x: re-executing once for a faster CPU runtime (%s); set %s=1 to "
                "skip", ", ".join(f"{k}={new[k]}" for k in changed), OPT_OUT_ENV)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], new)
    return True  # unreachable: execve replaces the process
