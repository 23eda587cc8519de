"""Prints the preset tables of docs/tpu.md and docs/gpu.md: mesh, batch per device and
estimated memory (TPU HBM, GPU memory) per device.

The estimate (why: pick data x model sizes, microbatches and rematerialisation before paying
for a slice or a cluster allocation):

    memory/device ~ 10 * P / M  +  b * A(M)
      P       parameters; 10 bytes each: fp32 weights (4) + fp32 gradients (4) + the bf16
              copy used in the forward pass (2); Adafactor's factored second moments add < 1%
      M       model-axis size (NUM_PARTITIONS): weights, heads, MLP and vocabulary split M ways
      b       sequences per device per microbatch = BATCH_SIZE / (data * NUM_MICROBATCHES)
      A(M)    bytes of activations kept for the backward pass per packed sequence, bf16:
              encoder Li*Le*(8d + (2f + 2h*Li)/M) * 2,
              decoder Lt*Ld*(12d + (2f + 2h*(Li+Lt))/M) * 2,
              fp32 logits and their gradient Lt*V*8/M
              (d emb_dim, f mlp_dim, h heads, Le/Ld layers, Li=512 inputs, Lt=114 targets)
      with ACTIVATION_REMAT each layer keeps only its input, (Li*Le + Lt*Ld)*d*2, plus the
              activations of the one layer being recomputed (the larger of an encoder layer
              and a decoder layer) and the logits

No XLA temporaries: a first estimate, not a promise; a run that does not fit needs a larger
NUM_MICROBATCHES or ACTIVATION_REMAT = True. On GPUs JAX takes 75% of each GPU's memory by
default (XLA_PYTHON_CLIENT_MEM_FRACTION), so that share is the budget.
Usage: python launch/preset_table.py
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
GIN = ROOT / "gin"
GIB = 2**30
INPUTS_LENGTH, TARGETS_LENGTH = 512, 114


class Slice(NamedTuple):
    accelerator: str  # gcloud --accelerator-type
    chips: int
    devices: int  # JAX devices (v3: one per TensorCore; v4/v5p megacore and v5e: one per chip)
    hosts: int
    hbm_gib: int  # per JAX device


SLICES: dict[str, Slice] = {
    "v3-8": Slice("v3-8", 4, 8, 1, 16),
    "v4-8": Slice("v4-8", 4, 4, 1, 32),
    "v4-32": Slice("v4-32", 16, 16, 4, 32),
    "v4-128": Slice("v4-128", 64, 64, 16, 32),
    "v5e-16": Slice("v5litepod-16", 16, 16, 4, 16),
    "v5e-64": Slice("v5litepod-64", 64, 64, 16, 16),
    "v5p-32": Slice("v5p-32", 16, 16, 4, 95),
}


class GpuCluster(NamedTuple):
    gpus: str  # GPU models of this memory class
    nodes: int
    gpus_per_node: int  # one JAX device per GPU
    hbm_gib: int  # per GPU

    @property
    def devices(self) -> int:
        return self.nodes * self.gpus_per_node


GPU_CLUSTERS: dict[str, GpuCluster] = {
    "gpu-8x48g": GpuCluster("RTX A6000, A40, L40S", 1, 8, 48),
    "gpu-8x80g": GpuCluster("A100 80GB, H100 80GB", 1, 8, 80),
    "gpu-4x8x80g": GpuCluster("A100 80GB, H100 80GB", 4, 8, 80),
}
# The share of each GPU's memory JAX preallocates and uses (its default
# XLA_PYTHON_CLIENT_MEM_FRACTION): the budget a GPU preset's estimate must fit.
GPU_MEMORY_FRACTION = 0.75


def devices(name: str) -> int:
    """JAX devices of the slice or GPU cluster a preset is written for."""
    return (SLICES[name] if name in SLICES else GPU_CLUSTERS[name]).devices


def gin_values(name: str, folder: Path = GIN) -> dict[str, str]:
    """`NAME = value` lines of a gin file, after the files it includes (later lines win)."""
    return _file_values(folder / name)


def _file_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if m := re.match(r"include '([^']+)'", line):
            values.update(_file_values(ROOT / m.group(1)))  # includes are root-relative
        elif m := re.match(r"([\w.]+)\s*=\s*(.+?)\s*(#.*)?$", line):
            values[m.group(1)] = m.group(2)
    return values


def preset(name: str) -> tuple[int, int]:
    """(NUM_PARTITIONS, NUM_MICROBATCHES or 1) of gin/partitioning/<name>.gin."""
    values = gin_values(f"partitioning/{name}.gin")
    microbatches = values["NUM_MICROBATCHES"]
    return int(values["NUM_PARTITIONS"]), 1 if microbatches == "None" else int(microbatches)


def remat(name: str) -> bool:
    """ACTIVATION_REMAT of gin/partitioning/<name>.gin (off when the preset does not set it)."""
    return gin_values(f"partitioning/{name}.gin").get("ACTIVATION_REMAT", "False") == "True"


class Model(NamedTuple):
    d: int
    f: int
    h: int
    layers: int
    vocab: int
    batch: int

    @classmethod
    def from_variant(cls, variant: str) -> "Model":
        v = gin_values(f"variants/{variant}.gin")
        cfg = {k.rsplit(".", 1)[1]: v[k] for k in v if k.startswith("network.T5Config.")}
        if cfg["num_encoder_layers"] != cfg["num_decoder_layers"]:
            raise ValueError(f"{variant}: the estimate assumes equal encoder/decoder depth")
        return cls(int(cfg["emb_dim"]), int(cfg["mlp_dim"]), int(cfg["num_heads"]),
                   int(cfg["num_encoder_layers"]), int(cfg["vocab_size"]), int(v["BATCH_SIZE"]))

    @property
    def params(self) -> int:
        attention = 4 * self.d * self.h * 64
        mlp = 2 * self.d * self.f
        return self.vocab * self.d + self.layers * (attention + mlp + 2 * attention + mlp)

    def _layer_bytes(self, m: int) -> tuple[float, float]:
        """Activations one encoder layer and one decoder layer keep per sequence (bf16)."""
        li, lt = INPUTS_LENGTH, TARGETS_LENGTH
        enc = li * (8 * self.d + (2 * self.f + 2 * self.h * li) / m) * 2
        dec = lt * (12 * self.d + (2 * self.f + 2 * self.h * (li + lt)) / m) * 2
        return enc, dec

    def activation_bytes(self, m: int, remat: bool = False) -> float:
        enc, dec = self._layer_bytes(m)
        logits = TARGETS_LENGTH * self.vocab * 8 / m
        if remat:
            inputs = (INPUTS_LENGTH + TARGETS_LENGTH) * self.layers * self.d * 2
            return inputs + max(enc, dec) + logits
        return self.layers * (enc + dec) + logits

    def per_device(self, data: int, microbatches: int) -> int:
        return self.batch // (data * microbatches)

    def hbm_gib(self, m: int, data: int, microbatches: int, remat: bool = False) -> float:
        b = self.per_device(data, microbatches)
        return (10 * self.params / m + b * self.activation_bytes(m, remat)) / GIB


def table() -> str:
    base, large = Model.from_variant("base"), Model.from_variant("large")
    rows = ["| slice (gcloud type) | chips / devices / hosts | preset: data x model, microbatches "
            "| global batch base / large | per device per microbatch base / large "
            "| est. HBM per device base / large (of) |",
            "|---|---|---|---|---|---|"]
    for name, s in SLICES.items():
        m, mb = preset(name)
        data = s.devices // m
        rows.append(
            f"| {name} (`{s.accelerator}`) | {s.chips} / {s.devices} / {s.hosts} "
            f"| `{name}.gin`: {data} x {m}, {mb} | {base.batch} / {large.batch} "
            f"| {base.per_device(data, mb)} / {large.per_device(data, mb)} "
            f"| {base.hbm_gib(m, data, mb):.1f} / {large.hbm_gib(m, data, mb):.1f} GiB "
            f"({s.hbm_gib} GiB) |")
    rows.append(f"\nParameters: base {base.params / 1e6:.0f}M, large {large.params / 1e6:.0f}M; "
                f"activations per sequence (M=1): base {base.activation_bytes(1) / 2**20:.0f} MiB, "
                f"large {large.activation_bytes(1) / 2**20:.0f} MiB.")
    return "\n".join(rows)


def gpu_table() -> str:
    base, large = Model.from_variant("base"), Model.from_variant("large")
    rows = ["| GPU cluster (GPU models) | nodes x GPUs | preset: data x model, microbatches, "
            "remat | global batch base / large | per GPU per microbatch base / large "
            "| est. memory per GPU base / large (JAX's 75% of) |",
            "|---|---|---|---|---|---|"]
    for name, c in GPU_CLUSTERS.items():
        m, mb = preset(name)
        data, rm = c.devices // m, remat(name)
        rows.append(
            f"| {name} ({c.gpus}) | {c.nodes} x {c.gpus_per_node} "
            f"| `{name}.gin`: {data} x {m}, {mb}, {'on' if rm else 'off'} "
            f"| {base.batch} / {large.batch} "
            f"| {base.per_device(data, mb)} / {large.per_device(data, mb)} "
            f"| {base.hbm_gib(m, data, mb, rm):.1f} / {large.hbm_gib(m, data, mb, rm):.1f} GiB "
            f"({GPU_MEMORY_FRACTION * c.hbm_gib:.0f} of {c.hbm_gib} GiB) |")
    rows.append(f"\nActivations per sequence with ACTIVATION_REMAT (M=1): base "
                f"{base.activation_bytes(1, True) / 2**20:.0f} MiB, large "
                f"{large.activation_bytes(1, True) / 2**20:.0f} MiB (without: "
                f"{base.activation_bytes(1) / 2**20:.0f} / "
                f"{large.activation_bytes(1) / 2**20:.0f} MiB).")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
    print()
    print(gpu_table())
