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


@pytest.mark.heavy
def test_a_few_training_steps_from_an_imported_released_model(vocab_dir, tmp_path, monkeypatch):
    """Scratch look-alike: vocab (folder ids, appended sentinels) + import-hf -> the built-in
    trainer runs span corruption over the mimic3 task with this vocabulary (TF numpy bridge)
    and starts from the imported rows (learning rate ~0: the tag rows stay the source's)."""
    import gin
    import numpy as np

    from clinical_t5x.data import synthetic_default
    from clinical_t5x.hf import convert
    from clinical_t5x.train import checkpoint_formats, trainer

    source = vocab_dir.parent / "scratch"
    init = convert.import_hf(source, tmp_path / "init")
    rows = checkpoint_formats.read_params(init)["token_embedder"]["embedding"]
    monkeypatch.setenv("CLINICAL_T5X_DATA_DIR", str(synthetic_default.corpus_dir() / "prepared"))
    sizes = lookalikes.SIZES
    args = trainer.parse_flags([
        "--gin_file=gin/builtin/tiny.gin", f"--gin.MODEL_DIR='{tmp_path / 'model'}'",
        f"--gin.VOCABULARY='{vocab_dir}'", "--gin.MIXTURE_OR_TASK_NAME='mimic3_span_corruption'",
        "--gin.BATCH_SIZE=8", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
        "--gin.TRAIN_STEPS=2", "--gin.EVAL_PERIOD=0", "--gin.CHECKPOINT_PERIOD=2",
        f"--gin.INIT_CHECKPOINT='{init}'", "--gin.LEARNING_RATE=1e-12",
        f"--gin.network.T5Config.vocab_size={len(rows)}",
        f"--gin.network.T5Config.emb_dim={sizes['d_model']}",
        f"--gin.network.T5Config.num_heads={sizes['num_heads']}",
        f"--gin.network.T5Config.head_dim={sizes['d_kv']}",
        f"--gin.network.T5Config.mlp_dim={sizes['d_ff']}",
        "--gin.network.T5Config.mlp_activations=('relu',)",
        "--gin.network.T5Config.logits_via_embedding=True"])
    gin.clear_config()
    try:
        trainer.configure_gin(args.gin_file, args.gin_bindings, args.gin_search_paths)
        result = trainer.train()
    finally:
        gin.clear_config()
    assert result.exit_code == 0 and result.step == 2
    trained = checkpoint_formats.read_params(tmp_path / "model")["token_embedder"]["embedding"]
    v = vocab.load(vocab_dir)
    tag_rows = list(v.tag_ids.values())
    np.testing.assert_allclose(trained[tag_rows], rows[tag_rows], rtol=1e-5, atol=1e-6)
