"""Vocabulary folders from the released Clinical-T5 look-alikes: exact ids, tags, sentinels."""
import json

import pytest
from transformers import AutoTokenizer

import released_lookalikes as lookalikes
from clinical_t5x.text import vocab, vocab_build
from test_vocab import ADVERSARIAL


@pytest.fixture(scope="module", params=lookalikes.KINDS)
def source(request, tmp_path_factory):
    return lookalikes.build(request.param, tmp_path_factory.mktemp("hf") / request.param)


@pytest.fixture(scope="module")
def texts():
    return lookalikes.notes(40, seed=11) + ADVERSARIAL


def _source_ids(source_dir):
    return AutoTokenizer.from_pretrained(source_dir).get_vocab()


def test_folder_ids_are_the_source_folders(source, texts, tmp_path):
    """Every text gets the source tokenizer's ids (python and TF alike); the folder's own HF
    tokenizer agrees too. Sentinel strings are left out where the source has none (there they
    are new special tokens, by design)."""
    v = vocab.load(vocab_build.from_hf(source, tmp_path / "v"))
    assert v.config["layout"] == "folder"
    src, own = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(tmp_path / "v")
    has_sentinels = "<extra_id_0>" in src.get_vocab()
    texts = [t for t in texts if has_sentinels or "<extra_id" not in t]
    tf_ids = v.encode_tf(texts)
    for row, text in enumerate(texts):
        want = src(text, add_special_tokens=False).input_ids
        assert v.encode(text) == want, f"row {row}"
        assert own(text, add_special_tokens=False).input_ids == want, f"row {row}"
        assert tf_ids[row].numpy().tolist() == want, f"row {row}"


def test_tags_keep_their_ids_and_sentinels_never_reuse_one(source, tmp_path, caplog):
    ids = _source_ids(source)
    v = vocab.load(vocab_build.from_hf(source, tmp_path / "v"))
    assert v.tag_ids == {tag: ids[tag] for tag in v.tag_ids}
    assert list(v.tag_ids.values()) != sorted(v.tag_ids.values())  # the shuffled order survived
    sentinels = [v.sentinel_id(i) for i in range(vocab.NUM_SENTINELS)]
    assert len(set(sentinels)) == 100 and not set(sentinels) & set(v.tag_ids.values())
    appended = v.config["appended"]
    if "<extra_id_0>" in ids:
        assert appended == {} and sentinels == [ids[f"<extra_id_{i}>"] for i in range(100)]
    else:  # appended after the last id, <extra_id_99> first, and recorded
        size = max(ids.values()) + 1
        assert sorted(appended.values()) == list(range(size, size + 100)) == sorted(sentinels)
        assert v.sentinel_id(99) == size and v.sentinel_id(0) == size + 99
        assert v.appended_ids == sorted(sentinels)
    for tag, tag_id in v.tag_ids.items():
        assert tag_id in v.encode(f"x {tag} y")


def test_canonical_moves_only_sentinels_and_tags(source, texts, tmp_path):
    out = vocab_build.from_hf(source, tmp_path / "v", canonical=True)
    v = vocab.load(out)
    folder = vocab.load(vocab_build.from_hf(source, tmp_path / "f"))
    s = v.num_pieces
    assert [v.sentinel_id(i) for i in range(100)] == [s + 99 - i for i in range(100)]
    assert list(v.tag_ids.values()) == list(range(s + 100, s + 115))
    to_canonical = {folder.tag_ids[t]: v.tag_ids[t] for t in v.tag_ids}
    for row, text in enumerate(t for t in texts if "<extra_id" not in t):
        assert v.encode(text) == [to_canonical.get(i, i) for i in folder.encode(text)], f"row {row}"


def test_cli_reports_layout_and_appended_ids(source, tmp_path, capsys):
    assert vocab_build.main(["--from-hf", str(source), "--out", str(tmp_path / "v")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "folder" and ("<extra_id_0>" in summary["appended"]) == (source.name != "base")


def test_tag_learned_as_a_piece_refuses_canonical(tmp_path):
    """A tokenizer whose own model holds a tag as a piece cannot be made canonical; it says so."""
    folder = lookalikes.build("large", tmp_path / "large")
    data = json.loads((folder / "tokenizer.json").read_text())
    name_id = next(t["id"] for t in data["added_tokens"] if t["content"] == "[Name]")
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "[Name]"]
    data["model"]["vocab"][5][0] = "[Name]"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no --canonical"):
        vocab_build.from_hf(folder, tmp_path / "v", canonical=True)
    assert name_id != 5
    v = vocab.load(vocab_build.from_hf(folder, tmp_path / "f"))
    assert v.tag_ids["[Name]"] == 5
