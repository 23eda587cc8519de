"""Downstream text formats: exact strings, DEID replacement, RadQA and CLIP windows, fractions."""
from __future__ import annotations

import json
import random

import pytest

from clinical_t5x.data import downstream_examples as ex
from clinical_t5x.data.downstream import Answer, ClipDocument, ClipSentence, NliPair, Question


def one_per_word(text: str) -> int:
    return len(text.split())


def test_mednli_format():
    pair = NliPair("p1", "Seen by Dr. [**Last Name (NamePattern1) 12**] for fever ", "No fever.", "contradiction")
    assert ex.mednli_example(pair) == {
        "inputs": "mednli premise: Seen by Dr. [Name] for fever. hypothesis: No fever.",
        "targets": "contradiction", "example_id": "p1"}


def _question(context: str, answer: str | None, qa_id: str = "q1") -> Question:
    answers = () if answer is None else (Answer(answer, context.index(answer)),)
    return Question(qa_id, "123", context, "What is seen in the [**Hospital 4**] liver?", answers, answer is None)


def test_radqa_report_that_fits():
    context = "Seen at [**Hospital 9**] on [**2150-1-2**].\nThe liver shows a cyst [**Hospital 9**]."
    [example] = ex.radqa_examples(_question(context, "a cyst [**Hospital 9**]"), one_per_word)
    assert example == {
        "inputs": "question: What is seen in the [Company] liver? context: Seen at [Company] on "
                  "2150-1-2.\nThe liver shows a cyst [Company].",
        "targets": "a cyst [Company]", "example_id": "q1", "answers": json.dumps(["a cyst [Company]"])}
    [impossible] = ex.radqa_examples(_question(context, None, "q2"), one_per_word)
    assert impossible["targets"] == ex.NO_ANSWER and json.loads(impossible["answers"]) == [ex.NO_ANSWER]


def test_radqa_windows():
    words = [f"w{i}" for i in range(100)]
    words[70:73] = ["[**Hospital", "3**]", "nodule"]
    context = " ".join(words)
    question = _question(context, "nodule")
    max_tokens = 40
    prefix_tokens = one_per_word("question: What is seen in the [Company] liver? context:")
    windows = ex.radqa_examples(question, one_per_word, max_tokens=max_tokens)
    assert len(windows) > 2
    seen = []
    for window in windows:
        body = window["inputs"].split(" context: ", 1)[1]
        assert one_per_word(window["inputs"]) <= max_tokens - 1  # one token kept for EOS
        assert window["targets"] == ("nodule" if "nodule" in body.split() else ex.NO_ANSWER)
        assert window["example_id"] == "q1"
        seen.append(body.split())
    budget = max_tokens - 1 - prefix_tokens
    assert [len(w) for w in seen[:-1]] == [budget] * (len(seen) - 1)
    replaced = context.replace("[**Hospital 3**]", "[Company]").split()
    assert seen[0][0] == replaced[0] and seen[-1][-1] == replaced[-1]
    for earlier, later in zip(seen, seen[1:]):  # consecutive windows overlap by about half
        assert replaced.index(later[0]) == replaced.index(earlier[0]) + budget // 2
    assert sum(w["targets"] == "nodule" for w in windows) >= 1


def _document() -> ClipDocument:
    texts = [("Admitted for [**Hospital 1**] pneumonia .", ()),
             ("Please check a CBC and repeat CT .", ("Imaging-related followup", "Lab-related followup")),
             ("Discharged home .", ())]
    return ClipDocument(77, tuple(ClipSentence(77, i, tuple(t.split()), labels)
                                  for i, (t, labels) in enumerate(texts)))


def test_clip_format():
    made = ex.clip_examples(_document(), one_per_word)
    document = "Admitted for [Company] pneumonia . Please check a CBC and repeat CT . Discharged home ."
    assert made[1] == {"inputs": f"{document} ; Please check a CBC and repeat CT .",
                       "targets": "Imaging-related followup, Lab-related followup", "example_id": "77-1"}
    assert [m["targets"] for m in made] == ["none", made[1]["targets"], "none"]
    assert made[0]["inputs"] == f"{document} ; Admitted for [Company] pneumonia ."


def test_clip_window_centred_on_the_sentence():
    made = ex.clip_examples(_document(), one_per_word, max_tokens=20)
    for example, sentence in zip(made, ["Admitted for [Company] pneumonia .",
                                        "Please check a CBC and repeat CT .", "Discharged home ."]):
        context, tail = example["inputs"].split(" ; ")
        assert tail == sentence and sentence in context
        assert one_per_word(example["inputs"]) <= 19
    # 10 context tokens for an 8-word sentence: one word each side, left first.
    assert made[1]["inputs"].startswith(". Please check a CBC and repeat CT . Discharged ; ")


def test_fraction_subsets_nested_and_deterministic():
    records = [f"id{i}" for i in range(1000)]
    subsets = {p: ex.fraction_subset(records, p, str) for p in (1, 5, 10, 25, 100)}
    assert [len(subsets[p]) for p in (1, 5, 10, 25, 100)] == [10, 50, 100, 250, 1000]
    for small, large in zip((1, 5, 10, 25), (5, 10, 25, 100)):
        assert set(subsets[small]) < set(subsets[large])
    assert subsets[5] == sorted(subsets[5], key=records.index)  # file order kept
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert set(ex.fraction_subset(shuffled, 5, str)) == set(subsets[5])  # by id, not position
    assert subsets[1] != records[:10]
    assert len(ex.fraction_subset(records[:3], 1, str)) == 1
    with pytest.raises(ValueError):
        ex.fraction_subset(records, 0, str)
