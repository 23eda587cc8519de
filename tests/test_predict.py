"""Decoding a split and scoring it as SeqIO would: fixed-shape batches read once, predictions in
example order, postprocessing of both sides, `aux_values` scores for metrics that take them."""
import jax
import numpy as np
import pytest
from flax import linen as nn

from clinical_t5x.eval import predict
from clinical_t5x.model import network

CONFIG = network.T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                          num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)


class Vocabulary:
    """Ids as text: `decode([5, 6])` is "5 6"."""

    eos_id = 1

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


class Feature:
    vocabulary = Vocabulary()


class Dataset:
    def __init__(self, examples):
        self.examples = examples

    def as_numpy_iterator(self):
        return iter(self.examples)


class FakeTask:
    """The part of a seqio.Task that `predict` uses; counts how often a split is read."""

    output_features = {"targets": Feature()}

    def __init__(self, rows: int):
        self.reads = 0
        self.examples = [{"inputs": np.arange(2, 2 + 3 + i, dtype=np.int32),
                          "targets_pretokenized": f"target {i}".encode()} for i in range(rows)]
        self.seen_aux = None
        self.metric_fns = [self.count_metric, self.scores_metric]

    def get_dataset(self, feature_lengths, split, shuffle, num_epochs):
        assert (split, shuffle, num_epochs) == ("validation", False, 1)
        self.reads += 1
        return Dataset(self.examples)

    @staticmethod
    def postprocess_fn(output, example=None, is_target=False):
        return output.upper() if is_target else output

    @staticmethod
    def count_metric(targets, predictions):
        return {"rows": len(predictions), "targets_upper": float(all(t.isupper() for t in targets))}

    def scores_metric(self, targets, predictions, aux_values):
        self.seen_aux = aux_values
        return {"scores_seen": len(aux_values["scores"])}


@pytest.fixture(scope="module")
def params():
    return nn.unbox(network.init_params(network.Transformer(CONFIG), jax.random.PRNGKey(0)))


def test_split_batches_pad_to_one_shape_and_keep_every_example():
    task = FakeTask(rows=5)
    batches = predict.split_batches(task, "validation", {"inputs": 6, "targets": 4}, 2)
    assert [ids.shape for ids, _ in batches] == [(2, 6)] * 3
    assert [len(chunk) for _, chunk in batches] == [2, 2, 1]
    last_ids, _ = batches[-1]
    assert not last_ids[1].any()  # the filler row is all padding
    first_ids, _ = batches[0]
    np.testing.assert_array_equal(first_ids[1], [2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(batches[1][0][1], [2, 3, 4, 5, 6, 7])  # cut to 6 ids


def test_evaluate_scores_every_example_once_and_reads_the_split_once(params):
    task = FakeTask(rows=5)
    batches = predict.split_batches(task, "validation", {"inputs": 6, "targets": 4}, 2)
    model = network.Transformer(CONFIG)
    first = predict.evaluate(model, params, task, batches, 4)
    again = predict.evaluate(model, params, task, batches, 4)
    assert task.reads == 1
    assert first == again == {"rows": 5.0, "targets_upper": 1.0, "scores_seen": 5.0}
    assert all(s <= 0 for s in task.seen_aux["scores"])  # log-probabilities


def test_predictions_are_the_cached_decoder_tokens_up_to_eos(params):
    task = FakeTask(rows=3)
    batches = predict.split_batches(task, "validation", {"inputs": 6, "targets": 4}, 4)
    model = network.Transformer(CONFIG)
    examples, texts, scores = predict.predict(model, params, task, batches, 4)
    assert [ex["targets_pretokenized"] for ex in examples] == [b"target 0", b"target 1",
                                                               b"target 2"]
    want = np.asarray(network.greedy_decode(model, params, batches[0][0], 4))[:3]
    for text, row in zip(texts, want):
        ids = row.tolist()
        ids = ids[:ids.index(1)] if 1 in ids else ids
        assert text == " ".join(str(i) for i in ids if i > 0)
    assert len(scores) == 3
