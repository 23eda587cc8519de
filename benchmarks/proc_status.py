"""This process's memory figures from `/proc/self/status` (Linux), shared by the benchmarks.

`VmHWM` is the high-water mark of the process's own address space, so it is what a benchmark
reports as peak memory; `ru_maxrss` is not, since exec carries a parent's peak over into it
(Python starts child processes with vfork, then exec).
"""
from __future__ import annotations

from pathlib import Path


def kib(field: str) -> int:
    """The value of `field` (`VmRSS`, `VmHWM`, ...) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")
