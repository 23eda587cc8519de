"""Synthetic downstream files: exact layouts, owner-only, deterministic, a learnable signal."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from clinical_t5x.data import downstream, synth, synth_downstream
from clinical_t5x.data.downstream_examples import NO_ANSWER

PLACEHOLDER = re.compile(r"\[\*\*[^\]]*\*\*\]")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    synth_downstream.write_downstream(out, seed=0)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_exact_layout_owner_only(root):
    expected = {f"mednli/{name}" for name in downstream.MEDNLI_FILES.values()}
    expected |= {f"radqa/{name}" for name in downstream.RADQA_FILES.values()}
    expected |= {f"clip/{name}" for name in (downstream.CLIP_SENTENCES, *downstream.CLIP_ID_FILES.values())}
    assert set(_files(root)) == expected
    for path in root.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_deterministic_by_seed(root, tmp_path):
    sizes = {"mednli": (5, 2, 2), "radqa": (3, 1, 1), "clip": (2, 1, 1)}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        synth_downstream.write_downstream(tmp_path / name, seed=seed, sizes=sizes)
    assert _files(tmp_path / "a") == _files(tmp_path / "b") != _files(tmp_path / "c")
    with pytest.raises(ValueError, match="three positive counts"):
        synth_downstream.write_downstream(tmp_path / "d", sizes={"clip": (1, 0, 1)})


def test_mednli_labels_follow_the_rule(root):
    pairs = downstream.read_mednli(root / "mednli", "train")
    assert {p.label for p in pairs} == set(downstream.NLI_LABELS)
    for pair in pairs:
        negated = re.match(r"(Patient does not have|Patient denies|No) ", pair.hypothesis)
        finding = re.sub(r"^(Patient does not have|Patient denies|No|Patient has|Patient was found "
                         r"to have|There is) |\.$", "", pair.hypothesis)
        shared = f"have {finding} and" in pair.premise or pair.premise.endswith(f"and {finding}")
        assert pair.label == ("contradiction" if negated else "entailment" if shared else "neutral")
        assert negated is None or shared
        assert PLACEHOLDER.search(pair.premise)


def test_radqa_answers_are_report_spans(root):
    questions = downstream.read_radqa(root / "radqa", "train")
    for q in questions:
        organ = re.fullmatch(r"What does the (\w+) show\?", q.question).group(1)
        assert q.is_impossible == (f"The {organ} shows " not in q.context)
        for answer in q.answers:
            assert q.context[:answer.start].endswith(f"The {organ} shows ")
            assert answer.text in synth_downstream._ORGAN_FINDINGS[organ]
            assert answer.text.split()[0] == "a" != NO_ANSWER.split()[0]  # parts at one word
        assert PLACEHOLDER.search(q.context)
    assert 0.2 < sum(q.is_impossible for q in questions) / len(questions) < 0.6
    words = {q.title: len(q.context.split()) for q in questions}
    long = [n for n in words.values() if n > 400]  # several 1,024-token windows
    assert 0.03 < len(long) / len(words) < 0.2
    assert max(n for n in words.values() if n <= 400) < 100  # the rest fit short windows


def test_clip_labels_follow_cue_phrases(root):
    sentences = [s for d in downstream.read_clip(root / "clip", "train") for s in d.sentences]
    for sentence in sentences:
        cued = {label for label, cues in synth_downstream._CLIP_CUES.items()
                if any(re.sub(r"\{\w+\}", "", cue.split("{")[0]) in sentence.text for cue in cues)}
        assert set(sentence.labels) == cued
    assert {label for s in sentences for label in s.labels} == set(downstream.CLIP_LABELS)
    assert any(len(s.labels) == 2 for s in sentences)
    assert any(PLACEHOLDER.search(s.text) for s in sentences)


def test_cli_flag(tmp_path, capsys):
    assert synth.main(["--downstream", str(tmp_path / "out")]) == 0
    assert set(downstream.dataset_folders(tmp_path / "out")) == {"mednli", "radqa", "clip"}
    with pytest.raises(SystemExit):
        synth.main([])
