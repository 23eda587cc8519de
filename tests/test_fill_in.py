"""The fill-in display's pure parts: span masking and splitting generated ids at sentinels.
(The model-backed path, with HF vs JAX logits, runs in tests/test_demo.py.)"""

import pytest

from clinical_t5x.hf import fill_in

from clinical_t5x.text import vocab_build


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = vocab_build.build_synthetic_vocab(tmp_path_factory.mktemp("vocab"), vocab_size=500)
    return AutoTokenizer.from_pretrained(folder)


def test_mask_spans_is_span_corruption_shaped_and_deterministic():
    text = fill_in.synthetic_excerpt(seed=1)
    assert len(text.split()) == fill_in.EXCERPT_WORDS
    note = fill_in.mask_spans(text, num_spans=3, seed=5)
    assert note == fill_in.mask_spans(text, num_spans=3, seed=5)
    assert len(note.spans) == 3
    assert all(1 <= len(span.split()) <= fill_in.MAX_SPAN_WORDS for span in note.spans)
    assert not note.inputs.startswith("<extra_id_0>")  # never at a part's first word
    assert "> <extra_id_" not in note.inputs  # spans never touch
    restored = note.inputs
    for i, span in enumerate(note.spans):
        restored = restored.replace(f"<extra_id_{i}>", span)
    assert restored == text
    assert note.targets.split()[0] == "<extra_id_0>"


def test_mask_spans_rejects_a_too_short_text():
    with pytest.raises(ValueError, match="too few"):
        fill_in.mask_spans("one two three four five six", num_spans=3)


def test_split_at_sentinels(tokenizer):
    generated = tokenizer("<extra_id_0> heparin gtt <extra_id_1> [Name] <extra_id_2>").input_ids
    before = tokenizer("Team", add_special_tokens=False).input_ids
    assert generated[-1] == tokenizer.eos_token_id
    # text before the first sentinel, padding and anything after EOS are ignored
    ids = before + [tokenizer.pad_token_id] + generated + before
    assert fill_in.split_at_sentinels(ids, tokenizer) == {0: "heparin gtt", 1: "[Name]", 2: ""}
