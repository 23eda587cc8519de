"""Device mesh, t5x logical-axis rules and shardings for the built-in trainer (JAX SPMD).

The mesh has a `data` axis (batch) and a `model` axis of size `num_partitions` (heads, MLP,
vocabulary), like t5x's 1-D model-parallel `standard_logical_axis_rules`; `embed` stays
replicated. Parameters carry logical names (network.py); these rules turn them into
`NamedSharding`s, so the same model runs on 1 device, 8 forced CPU devices or a TPU pod slice.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping, Sequence

import gin
import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

LogicalRules = Sequence[tuple[str, str | None]]

STANDARD_LOGICAL_AXIS_RULES: LogicalRules = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("length", None),
    ("layers", None),
    ("stack", None),
    ("mlp_activations", None),
)


def initialize_distributed() -> bool:
    """Join a multi-process JAX job when the environment describes one; no-op otherwise.

    Explicit: JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID. Automatic: Cloud
    TPU VMs (TPU_WORKER_HOSTNAMES with several hosts), SLURM and Open MPI, which
    `jax.distributed.initialize()` detects itself. Must run before any JAX computation.
    Returns True when a multi-process job was joined.
    """
    env = os.environ
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env:
        num = int(env["JAX_NUM_PROCESSES"])
        if num <= 1:
            return False
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=num, process_id=int(env["JAX_PROCESS_ID"]))
    elif _cluster_detected(env):
        jax.distributed.initialize()
    else:
        return False
    log.info("joined distributed JAX job: process %d of %d, %d global devices",
             jax.process_index(), jax.process_count(), jax.device_count())
    return True


def _cluster_detected(env: Mapping[str, str]) -> bool:
    tpu_hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    return (len(tpu_hosts) > 1 or int(env.get("SLURM_NTASKS", "1")) > 1
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


@gin.configurable(module="partitioning")
class Partitioner:
    """A `data` x `model` mesh over all (global) devices plus logical-axis rules."""

    def __init__(self, num_partitions: int = 1,
                 logical_axis_rules: LogicalRules = STANDARD_LOGICAL_AXIS_RULES,
                 devices: Sequence[jax.Device] | None = None) -> None:
        devices = list(jax.devices() if devices is None else devices)
        if num_partitions < 1 or len(devices) % num_partitions:
            raise ValueError(f"num_partitions={num_partitions} must divide the "
                             f"{len(devices)} devices")
        grid = np.asarray(devices).reshape(len(devices) // num_partitions, num_partitions)
        self.mesh = Mesh(grid, ("data", "model"))
        self.rules = tuple(tuple(rule) for rule in logical_axis_rules)

    @property
    def num_partitions(self) -> int:
        return self.mesh.shape["model"]

    @property
    def data_sharding(self) -> NamedSharding:
        """Sharding of a batch feature: leading (batch) axis split over `data`."""
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @contextlib.contextmanager
    def activation_context(self) -> Iterator[None]:
        """Mesh + rules in scope, so `nn.with_logical_constraint` in the model takes effect.

        Enter it around tracing (the first call of a jitted step).
        """
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def logical_to_sharding(self, logical_specs: Any) -> Any:
        """Tree of logical PartitionSpecs -> tree of NamedShardings on this mesh."""
        return nn.logical_to_mesh_sharding(logical_specs, self.mesh, self.rules)

    def state_shardings(self, abstract_state: Any) -> Any:
        """Shardings for a (boxed) abstract train state; unannotated leaves are replicated.

        Leaves wrapped in `nn.LogicallyPartitioned` (the parameters) follow the rules; all
        other leaves (step, Adafactor's factored statistics: vectors, small) are replicated.
        A dimension that the mesh axis does not divide (e.g. 2 heads on 4 model shards) is
        replicated instead of failing. The result has the structure of the unboxed state.
        """
        mesh_specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_state), self.rules)
        return jax.tree_util.tree_map(
            lambda spec, leaf: NamedSharding(self.mesh, self._divisible(spec, leaf.shape)),
            mesh_specs, nn.unbox(abstract_state),
            is_leaf=lambda x: isinstance(x, PartitionSpec))

    def _divisible(self, spec: PartitionSpec, shape: tuple[int, ...]) -> PartitionSpec:
        def fits(axes: Any, size: int) -> bool:
            names = axes if isinstance(axes, tuple) else (axes,)
            return size % int(np.prod([self.mesh.shape[n] for n in names])) == 0

        return PartitionSpec(*(axes if axes is None or fits(axes, size) else None
                               for axes, size in zip(spec, shape)))


def global_batch_from_local(local_batch: Mapping[str, np.ndarray],
                            sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble the global batch from this process's rows (each host feeds only its shard).

    `local_batch` holds this process's `global_batch / process_count` rows, in process order;
    on one process this is simply a sharded device put.
    """
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in local_batch.items()}
