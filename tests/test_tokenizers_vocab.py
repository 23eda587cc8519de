"""The tokenizers-backed seqio vocabulary: seqio/tf.data plumbing, decoding, pickling, checks."""
import json
import pickle
import shutil

import pytest
import seqio
import tensorflow as tf

import released_lookalikes as lookalikes
from clinical_t5x.text import tokenizers_vocab, vocab, vocab_build


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv")
    return vocab_build.from_hf(lookalikes.build("scratch", root / "scratch"), root / "vocab")


def test_seqio_plumbing(vocab_dir):
    v = vocab.load(vocab_dir)
    assert isinstance(v, tokenizers_vocab.TokenizersVocabulary) and v.lowercase
    again = pickle.loads(pickle.dumps(v))
    assert again == v and hash(again) == hash(v) and vocab.load(vocab_dir) is v
    texts = ["[Name] was seen.", "BP 120/80", ""]
    ds = tf.data.Dataset.from_tensor_slices({"text": texts})
    ds = seqio.preprocessors.tokenize(ds, {"text": seqio.Feature(v)}, copy_pretokenized=False)
    assert [ex["text"].tolist() for ex in ds.as_numpy_iterator()] == [v.encode(t) for t in texts]
    assert v.encode_tf(tf.constant("BP 120/80")).numpy().tolist() == v.encode("BP 120/80")


def test_decode_drops_pad_and_eos_in_python_and_tf(vocab_dir):
    v = vocab.load(vocab_dir)
    ids = v.encode("the patient [Name] had 12 visits")
    text = v.decode(ids + [v.eos_id, 0, 0])
    assert text == v.decode(ids) and "12" in text
    padded = tf.constant([ids + [1, 0], ids[:3] + [0] * (len(ids) - 1)])
    assert [t.decode() for t in v.decode_tf(padded).numpy()] == [v.decode(ids), v.decode(ids[:3])]


def test_ids_that_disagree_with_the_file_are_refused(vocab_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(vocab_dir, broken)
    config = json.loads((broken / vocab.CONFIG_NAME).read_text())
    tags = config["tag_ids"]
    first, second = list(tags)[:2]
    tags[first], tags[second] = tags[second], tags[first]
    (broken / vocab.CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="other ids"):
        vocab.load(broken)
