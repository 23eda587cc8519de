"""The Hugging Face tokenizer builder: ids of every added token, and loading paths that agree."""
import pytest
import tokenizers
from transformers import AutoTokenizer, T5TokenizerFast

from clinical_t5x.data import deid

from clinical_t5x.text import tokenizer, vocab, vocab_build

TEXT = "Seen by [Name] on [DAY] ([Age] y/o) <extra_id_3> at [LOC]."


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return vocab_build.build_synthetic_vocab(tmp_path_factory.mktemp("vocab"), vocab_size=600)


def test_added_tokens_at_their_ids(vocab_dir):
    v = vocab.load(vocab_dir)
    hf = tokenizer.build_hf_tokenizer(vocab_dir)
    assert isinstance(hf, T5TokenizerFast) and len(hf) == v.vocab_size
    expected = {f"<extra_id_{i}>": v.sentinel_id(i) for i in range(100)} | v.tag_ids
    assert dict(zip(expected, hf.convert_tokens_to_ids(list(expected)))) == expected
    assert set(expected) <= set(hf.all_special_tokens)
    added = [(i, t.content) for i, t in sorted(hf.added_tokens_decoder.items()) if i >= v.num_pieces]
    assert added == sorted((i, t) for t, i in expected.items())  # sentinels, then tags, by id
    assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2)
    assert hf(TEXT).input_ids[-1] == 1  # T5's post-processor appends </s>
    assert [hf.convert_ids_to_tokens(i) for i in range(v.num_pieces)] == [v.id_to_token(i) for i in range(v.num_pieces)]


def test_every_loading_path_agrees(vocab_dir):
    """The folder's tokenizer.json, AutoTokenizer (which rebuilds T5's pipeline) and the builder."""
    built = tokenizer.build_hf_tokenizer(vocab_dir / "spiece.model")
    auto = AutoTokenizer.from_pretrained(vocab_dir)
    raw = tokenizers.Tokenizer.from_file(str(vocab_dir / "tokenizer.json"))
    ids = vocab.load(vocab_dir).encode(TEXT)
    assert type(auto) is type(built)
    assert built(TEXT, add_special_tokens=False).input_ids == ids
    assert auto(TEXT, add_special_tokens=False).input_ids == ids
    assert raw.encode(TEXT, add_special_tokens=False).ids == ids


def test_lowercase_must_match_the_model(vocab_dir):
    with pytest.raises(ValueError, match="lowercase=True"):
        tokenizer.build_hf_tokenizer(vocab_dir, lowercase=True)
    assert tokenizer.build_hf_tokenizer(vocab_dir, lowercase=False) is not None


def test_save_writes_loadable_files(vocab_dir, tmp_path):
    paths = tokenizer.save_hf_tokenizer(vocab_dir, tmp_path / "hf")
    assert {p.name for p in paths} >= {"tokenizer.json", "tokenizer_config.json", "spiece.model"}
    assert (tmp_path / "hf" / "spiece.model").read_bytes() == (vocab_dir / "spiece.model").read_bytes()
    auto = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert auto.convert_tokens_to_ids(list(deid.TAGS)) == list(vocab.load(vocab_dir).tag_ids.values())
