"""The seqio vocabulary: id layout, HF parity, python/TF agreement, lower-casing, seqio plumbing."""
import pickle
import re

import pytest
import seqio
import tensorflow as tf
from transformers import AutoTokenizer

from clinical_t5x.data import deid, synth

# Hand-written cases around what the libraries treat differently: added tokens next to

from clinical_t5x.text import tokenizer, vocab, vocab_build
# punctuation, digits, whitespace and each other; whitespace of every kind; unicode; case.
ADVERSARIAL = [
    "", " ", "\n", "[Name]", "[Name][Age]", " [Name] ", "[Name]\n[Name]", "a[Name]b", "12[#]34",
    "([DAY]/[MO]/[YR])", "Dr. [Name], MD.", "[LOC],[State] [Country].", "end [MISC]", "[MISC] start",
    "x  \n\n\t y", "\t\tfoo\n", "  lead and trail  ", "a\x0bb\x0cc\rd\x85e\xa0f\u2003g\u3000h\u200bi",
    "Café naïve résumé Ærø", "患者发热 😀😀 ok", "☃☃☃ꙮꙮ unknown runs", "ÉCOLE École ß İstanbul ǅ",
    "UPPER lower MiXeD [LOC]", "a . , ; : ! ? ( ) ' \"", "¨´ ﬁ ½ ²", "home ▁ ▁▁x ▁", "a▁b",
    "<extra_id_0> a [Name]<extra_id_99>b", "[NAME] [name] [ Name ]", "_" * 70, "=" * 33 + "\n" + "-" * 17,
    "x" * 300, "BP 120/80, HR 72, T 98.6F, SpO2 97% on 2L NC", "[Name]" * 5, "[Reg#][#]#[#]",
    "[[Name]]", "[Name]'s mother", "[YR]2019 5[#] [MO]-[DAY]-[YR]", "a\x00b\x01c\x1cd\x7fe",
    "👩‍⚕️ e\u0301 Å", "*" * 40 + "[MISC]" + "*" * 40, "\r\n[Name]\r\n", "<extra_id_100> <extra_id_1>0",
]


@pytest.fixture(scope="module", params=[False, True], ids=["cased", "lowercase"])
def vocab_dir(request, tmp_path_factory):
    return vocab_build.build_synthetic_vocab(tmp_path_factory.mktemp("vocab"), lowercase=request.param)


@pytest.fixture(scope="module")
def corpus():
    notes = deid.replace_list_of_notes(synth.synthetic_notes(1600, seed=7))
    notes += deid.replace_list_of_notes(synth.synthetic_notes(400, seed=8, style="mimic4"), "mimic-iv")
    return notes + ADVERSARIAL


def test_id_layout(vocab_dir):
    v = vocab.load(vocab_dir)
    s = v.num_pieces
    assert [v.sentinel_id(i) for i in (0, 1, 99)] == [s + 99, s + 98, s]
    assert list(v.tag_ids) == list(deid.TAGS)
    assert list(v.tag_ids.values()) == list(range(s + 100, s + 100 + len(deid.TAGS)))
    assert v.vocab_size == s + 100 + len(deid.TAGS)
    assert v.model_vocab_size % 128 == 0 and 0 <= v.model_vocab_size - v.vocab_size < 128
    assert (v.pad_id, v.eos_id, v.unk_id, v.bos_id) == (0, 1, 2, None)
    for i in range(100):
        assert v.encode(f"<extra_id_{i}>") == [v.sentinel_id(i)]
        assert v.decode([v.sentinel_id(i)]) == f"<extra_id_{i}>"
    for tag, i in v.tag_ids.items():
        assert v.encode(tag) == [i] and v.decode([i]) == tag


def test_t5_sized_model_keeps_t5_ids(vocab_dir, tmp_path):
    """With T5's 32,000 pieces the tags take 32100..32114 and the model keeps 32128 rows."""
    proto = tokenizer.read_spiece(vocab_dir / vocab.SPIECE_NAME)
    template = proto.pieces[-1]
    for i in range(32000 - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.CopyFrom(template)
        piece.piece, piece.score = f"▁zz{i}", -30.0
    (tmp_path / vocab.SPIECE_NAME).write_bytes(proto.SerializeToString())
    v = vocab.load(vocab_build.write_vocab_folder(tmp_path, "test"))
    assert (v.sentinel_id(0), v.sentinel_id(99)) == (32099, 32000)
    assert list(v.tag_ids.values()) == list(range(32100, 32115))
    assert (v.vocab_size, v.model_vocab_size) == (32115, 32128)


@pytest.mark.slow
def test_matches_hugging_face_tokenizer(vocab_dir, corpus):
    """The parity requirement: every text encodes to HF's ids and decodes to HF's string."""
    v = vocab.load(vocab_dir)
    hf = AutoTokenizer.from_pretrained(vocab_dir)
    ours = [v.encode(text) for text in corpus]
    theirs = hf(corpus, add_special_tokens=False)["input_ids"]
    mismatched = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not mismatched, f"{len(mismatched)} texts differ from HF, first rows {mismatched[:5]}"
    assert [v.decode(ids) for ids in ours] == hf.batch_decode(ours)


@pytest.mark.slow
def test_python_and_tensorflow_agree(vocab_dir, corpus):
    v = vocab.load(vocab_dir)
    ours = [v.encode(text) for text in corpus]
    batched = v.encode_tf(tf.constant(corpus)).to_list()
    mismatched = [i for i, (a, b) in enumerate(zip(ours, batched)) if a != b]
    assert not mismatched, f"TF differs on rows {mismatched[:5]}"
    for text, ids in zip(ADVERSARIAL, ours[-len(ADVERSARIAL):]):
        scalar = v.encode_tf(tf.constant(text))
        assert scalar.dtype == tf.int32 and scalar.numpy().tolist() == ids
        assert v.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == v.decode(ids)
    ragged = tf.ragged.constant(ours[:50])
    padded = ragged.to_tensor(default_value=v.pad_id)
    assert [s.decode() for s in v.decode_tf(padded).numpy()] == [v.decode(ids) for ids in ours[:50]]


def test_decode_round_trip(vocab_dir, corpus):
    """Decoding gives the text back up to what normalisation changes; tags always survive intact."""
    v = vocab.load(vocab_dir)
    for text in corpus[:300]:
        ids = v.encode(text)
        if v.unk_id not in ids:  # "<unk>" decodes to a string that encodes as one added token
            assert v.encode(v.decode(ids)) == ids
        assert [t for t in ids if t in v.tag_ids.values()] == [v.tag_ids[t] for t in _tags_in(text)]
    assert v.decode([5, v.eos_id, 6]) == v.decode([5])  # seqio: through the first EOS
    assert v.decode([v.pad_id, 5, v.pad_id]) == v.decode([5])
    assert v.decode([v.vocab_size]) == "<unk>"  # padding rows of the embedding


def _tags_in(text):
    return re.findall("|".join(map(re.escape, deid.TAGS)), text)


def test_lowercase(vocab_dir):
    """The scratch vocabulary folds case outside the tags; the cased one keeps it."""
    v = vocab.load(vocab_dir)
    text = "Patient SEEN by Dr. [Name] ON [DAY] for BP"
    lowered = "patient seen by dr. [Name] on [DAY] for bp"
    assert v.unk_id not in v.encode(text)
    assert (v.encode(text) == v.encode(lowered)) == v.lowercase
    assert v.decode(v.encode(text)) == (lowered if v.lowercase else text).replace(" [", "[")
    assert (v.tag_ids["[Name]"] in v.encode("[NAME]")) is False


def test_seqio_plumbing(vocab_dir):
    """Works inside tf.data through seqio, pickles, and compares by content."""
    v = vocab.load(vocab_dir)
    again = pickle.loads(pickle.dumps(v))
    assert again == v and hash(again) == hash(v) and again.encode("[Name] x") == v.encode("[Name] x")
    assert vocab.load(vocab_dir) is v
    ds = tf.data.Dataset.from_tensor_slices({"text": ["[Name] was seen.", "BP 120/80"]})
    ds = seqio.preprocessors.tokenize(ds, {"text": seqio.Feature(v)}, copy_pretokenized=False)
    assert [ex["text"].tolist() for ex in ds.as_numpy_iterator()] == [v.encode("[Name] was seen."),
                                                                      v.encode("BP 120/80")]


def test_remote_folder(vocab_dir):
    """Folders on remote storage (gs:// on TPU pods) load through tf.io.gfile; here TF's ram://."""
    remote = f"ram://vocab-{vocab_dir.name}/"
    tf.io.gfile.makedirs(remote)
    for path in vocab_dir.iterdir():
        tf.io.gfile.copy(str(path), remote + path.name, overwrite=True)
    v = vocab.load(remote)
    assert v.directory == remote and v.spiece_path == remote + "spiece.model"
    assert v == vocab.load(vocab_dir) and v.encode(ADVERSARIAL[8]) == vocab.load(vocab_dir).encode(ADVERSARIAL[8])
    with pytest.raises(FileNotFoundError, match="ram://nowhere/clinical_vocab.json"):
        vocab.load("ram://nowhere")


def test_load_errors(vocab_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="clinical_vocab.json"):
        vocab.load(tmp_path)
    for name in ("clinical_vocab.json", "spiece.model"):
        (tmp_path / name).write_bytes((vocab_dir / name).read_bytes())
    proto = tokenizer.read_spiece(tmp_path / "spiece.model")
    proto.pieces[5].score += 1e-3
    (tmp_path / "spiece.model").write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="multiples"):
        vocab.load(tmp_path)
