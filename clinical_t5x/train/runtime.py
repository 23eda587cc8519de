"""Per-machine CPU runtime settings: the allocator (one re-exec) and XLA flags (by CPU and dtype).

Allocator. With glibc's default malloc XLA's CPU runtime takes fresh pages every step (its
multi-GB temp block is mmapped and unmapped each step: page faults, a fifth of CPU time in
the kernel). Our glibc tunables serve every block below 4 GiB from one never-trimmed heap, so
the pages are reused from step to step. They act only at process start, hence
`configure_cpu_runtime`'s single re-exec. tcmalloc only on request (CLINICAL_T5X_TCMALLOC=1):
it doubles peak memory on T5 "small".

XLA flags. `--xla_cpu_experimental_ynn_fusion_type=dot` speeds up float32 steps (fused dots,
and it avoids XLA's slow leading-axis reductions) but makes bfloat16 dots 2-10x slower, on
Intel AMX and on AMD alike: it takes bf16 dots with float32 results, the ones the network's
bf16 products use, from 1.4 TFLOP/s to 0.15 on AMX and from 430 GFLOP/s to 205 on Zen 4
(docs/performance.md has the measurements and the CPU models).
`--xla_disable_hlo_passes=tree_reduction_rewriter` keeps XLA from splitting every long
reduction (Adafactor's parameter RMS, the layer norms' sums) into chains of small
reduce-window ops: 4-5% less time per float32 train step on "tiny" and "small"; the sums stay
in float32. Both are float32-only: with bfloat16 activations the YNN flag slows the dots
(above) and the tree-reduction flag measured no faster (0.95 of the speed without it on AMX,
0.99 on Zen 4, both within the noise). So the flags are chosen by the activation dtype, known
only once gin is parsed: XLA reads XLA_FLAGS when its backend starts, not at process start, so
`configure_xla_flags` sets them in-process, before the first computation, without a re-exec.

Inline dispatch. JAX queues CPU computations by default and returns at once; each train step
allocates its XLA temporary block when it is queued, so the next step's block is allocated
before the previous step's is released, and the heap above (never trimmed) keeps every copy:
on "tiny" the process peaked at 2.3 to 4.8 GB instead of 1.5, by how many steps were queued
and by a race even with one. `configure_cpu_dispatch` runs computations inline instead
(`jax_cpu_enable_async_dispatch=False`), one temporary block at a time, at the same step time:
on CPU the step uses every core anyway, so queueing ahead overlaps nothing worth having.

Activation dtype. `preferred_activation_dtype` (gin: `@runtime.preferred_activation_dtype()`)
is bfloat16 on accelerators and on CPUs with bf16 matrix hardware (amx_bf16, avx512_bf16),
float32 on other CPUs, where bf16 is emulated. The bf16 train step takes 0.6 of the float32
step's time on an AMX Xeon, 0.66 on a Zen 4 EPYC (avx512_bf16).

Nothing here applies to GPU/TPU. Opt out of all of it with CLINICAL_T5X_NO_REEXEC=1.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import gin

from clinical_t5x import owner_only

log = logging.getLogger(__name__)

OPT_OUT_ENV = "CLINICAL_T5X_NO_REEXEC"
_DONE_ENV = "CLINICAL_T5X_RUNTIME_CONFIGURED"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
TREE_REDUCTION_FLAG = "--xla_disable_hlo_passes=tree_reduction_rewriter"
_FUSION_FLAG_NAMES = ("xla_cpu_experimental_ynn_fusion_type",
                      "xla_cpu_experimental_onednn_fusion_type")
BF16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16")
# No `glibc.malloc.hugetlb=1`: with it, glibc 2.36 served even 20 MB blocks by fresh mmaps
# that the kernel zeroes every step (docs/performance.md).
GLIBC_TUNABLES = ":".join([
    "glibc.malloc.arena_max=1",
    f"glibc.malloc.mmap_threshold={4 << 30}",
    f"glibc.malloc.trim_threshold={64 << 30}",
])
TCMALLOC_ENV = "CLINICAL_T5X_TCMALLOC"
TCMALLOC_NAME = "libtcmalloc_minimal.so.4"
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib")
_ACCELERATOR_DISTS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What the settings depend on: vendor and model name (for reports), feature flags."""

    vendor: str
    model: str
    flags: frozenset[str]

    @property
    def has_bf16_matrix_unit(self) -> bool:
        return any(flag in self.flags for flag in BF16_MATRIX_FLAGS)


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's vendor, model name and flags from a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in fields:
            fields[key] = value.strip()
    return CpuInfo(vendor=fields.get("vendor_id", "unknown"),
                   model=fields.get("model name", "unknown"),
                   flags=frozenset(fields.get("flags", "").split()))


def this_cpu() -> CpuInfo:
    """This machine's CpuInfo (empty flags where /proc/cpuinfo is unreadable, e.g. macOS)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return CpuInfo("unknown", "unknown", frozenset())


def backend_is_cpu(env: dict[str, str] | None = None) -> bool:
    """Whether JAX will run on CPU, decided without importing jax (which would fix its flags)."""
    env = os.environ if env is None else env
    platforms = env.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] == "cpu"
    names = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
    return not any(name.lower().startswith(_ACCELERATOR_DISTS) for name in names)


@gin.configurable(module="runtime")
def preferred_activation_dtype() -> str:
    """bfloat16 where it is fast (accelerators, CPUs with AMX or AVX-512 BF16), else float32."""
    if not backend_is_cpu() or this_cpu().has_bf16_matrix_unit:
        return "bfloat16"
    return "float32"


def xla_cpu_flags(dtype: str) -> list[str]:
    """XLA flags that pay off for this activation dtype on CPU (see the module docstring)."""
    if str(dtype) != "float32":
        return []
    return [YNN_FLAG, TREE_REDUCTION_FLAG] if jaxlib_knows_ynn_flag() else [TREE_REDUCTION_FLAG]


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").partition("=")[0]


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
            owner_only.make_dir(cache.parent)
            with owner_only.open_file(cache, "w") as out:
                out.write(json.dumps(known))
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
    """The environment to re-exec with (allocator settings), leaving user settings alone."""
    new = dict(env)
    tcmalloc = find_tcmalloc() if env.get(TCMALLOC_ENV) == "1" else None
    if tcmalloc and TCMALLOC_NAME not in new.get("LD_PRELOAD", ""):
        new["LD_PRELOAD"] = ":".join(p for p in (tcmalloc, new.get("LD_PRELOAD")) if p)
    elif not tcmalloc and "GLIBC_TUNABLES" not in new:
        new["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    new[_DONE_ENV] = "1"
    return new


def _applies(env: dict[str, str]) -> bool:
    """Settings apply on CPU, unless opted out or inside pytest (which must not be replaced or
    have its environment changed for later tests)."""
    return env.get(OPT_OUT_ENV) != "1" and "pytest" not in sys.modules and backend_is_cpu(env)


def configure_cpu_runtime() -> bool:
    """Re-exec this process once with the allocator settings; False when not applicable.

    Call at the very start of a command's main(), before anything heavy. Skipped when opted
    out (CLINICAL_T5X_NO_REEXEC=1), when already done, inside pytest, and when an accelerator
    backend will be used.
    """
    env = dict(os.environ)
    if env.get(_DONE_ENV) == "1" or not _applies(env):
        return False
    new = cpu_runtime_env(env)
    changed = sorted(k for k in ("LD_PRELOAD", "GLIBC_TUNABLES") if new.get(k) != env.get(k))
    if not changed:
        return False
    log.warning("clinical_t5x: re-executing once for a faster CPU allocator (%s); set %s=1 to "
                "skip", ", ".join(f"{k}={new[k]}" for k in changed), OPT_OUT_ENV)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], new)
    return True  # unreachable: execve replaces the process


def configure_xla_flags(dtype: str) -> list[str]:
    """Add this dtype's XLA CPU flags to XLA_FLAGS; returns the flags added.

    Must run before JAX's backend starts (the first computation or `jax.devices()`); later
    it logs why and changes nothing. A flag the user set in XLA_FLAGS wins, and a fusion flag
    of theirs (YNN or oneDNN) replaces ours.
    """
    env = os.environ
    if not _applies(dict(env)):
        return []
    user_flags = env.get("XLA_FLAGS", "")
    user_fusion = any(name in user_flags for name in _FUSION_FLAG_NAMES)
    flags = [flag for flag in xla_cpu_flags(dtype)
             if _flag_name(flag) not in user_flags
             and not (user_fusion and _flag_name(flag) in _FUSION_FLAG_NAMES)]
    if not flags:
        return []
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log.info("XLA CPU flags %s not applied: the JAX backend has already started",
                 " ".join(flags))
        return []
    env["XLA_FLAGS"] = " ".join([user_flags, *flags]).strip()
    log.info("XLA CPU flags for %s activations: %s", dtype, " ".join(flags))
    return flags


def configure_cpu_dispatch() -> bool:
    """Run JAX's CPU computations inline (see the module docstring); False when not applicable.

    Like `configure_xla_flags`: only on CPU, not when opted out or inside pytest, and only
    before JAX's backend starts, which reads the setting when it creates its CPU client.
    """
    return _applies(dict(os.environ)) and inline_cpu_dispatch()


def inline_cpu_dispatch() -> bool:
    """Set `jax_cpu_enable_async_dispatch=False` unless JAX's backend has already started
    queueing (then log why not and return False). The benchmark's "tuned" workers call this
    directly."""
    import jax
    from jax._src import xla_bridge

    if not jax.config.read("jax_cpu_enable_async_dispatch"):
        return True  # already inline (a second run in the same process)
    if xla_bridge.backends_are_initialized():
        log.info("JAX CPU dispatch left asynchronous: the JAX backend has already started")
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
