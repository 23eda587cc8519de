"""Mesh shapes, logical-axis rules -> shardings, batch assembly, distributed no-op."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from clinical_t5x.model import network, partitioning


@pytest.mark.parametrize("num_partitions, data", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_mesh_axes_sized_by_num_partitions(num_partitions, data):
    part = partitioning.Partitioner(num_partitions=num_partitions)
    assert dict(part.mesh.shape) == {"data": data, "model": num_partitions}
    assert part.data_sharding.spec == P("data")


def test_num_partitions_must_divide_devices():
    with pytest.raises(ValueError, match="num_partitions=3"):
        partitioning.Partitioner(num_partitions=3)


def param_specs(heads: int, num_partitions: int) -> dict[str, P]:
    cfg = network.T5Config(vocab_size=128, emb_dim=32, num_heads=heads, head_dim=8, mlp_dim=64,
                           num_encoder_layers=1, num_decoder_layers=1)
    abstract = jax.eval_shape(functools.partial(network.init_params, network.Transformer(cfg)),
                              jax.random.PRNGKey(0))
    shardings = partitioning.Partitioner(num_partitions).state_shardings(abstract)
    flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {"/".join(k.key for k in path): s.spec for path, s in flat}


def test_rules_shard_heads_mlp_vocab_over_model_and_replicate_embed():
    specs = param_specs(heads=4, num_partitions=2)
    assert specs["token_embedder/embedding"] == P("model", None)
    assert specs["encoder/layers_0/attention/query/kernel"] == P(None, "model")
    assert specs["encoder/layers_0/attention/out/kernel"] == P("model", None)
    assert specs["decoder/layers_0/mlp/wi/kernel"] == P(None, "model")
    assert specs["decoder/layers_0/mlp/wo/kernel"] == P("model", None)
    assert specs["decoder/logits_dense/kernel"] == P(None, "model")
    assert specs["encoder/relpos_bias/rel_embedding"] == P("model", None)
    assert specs["encoder/encoder_norm/scale"] == P(None)


def test_dimension_not_divisible_by_model_axis_is_replicated():
    specs = param_specs(heads=2, num_partitions=4)
    assert specs["encoder/relpos_bias/rel_embedding"] == P(None, None)
    assert specs["encoder/layers_0/attention/query/kernel"] == P(None, "model")  # 16 cols


def test_global_batch_from_local_shards_rows_over_data():
    part = partitioning.Partitioner(num_partitions=2)
    local = {"encoder_input_tokens": np.arange(8 * 3, dtype=np.int32).reshape(8, 3)}
    batch = partitioning.global_batch_from_local(local, part.data_sharding)
    array = batch["encoder_input_tokens"]
    assert array.sharding == part.data_sharding
    np.testing.assert_array_equal(np.asarray(array), local["encoder_input_tokens"])
    assert {s.data.shape for s in array.addressable_shards} == {(2, 3)}


def test_initialize_distributed_is_a_noop_for_one_process(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
                 "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert partitioning.initialize_distributed() is False
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert partitioning.initialize_distributed() is False
