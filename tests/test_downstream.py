"""Downstream readers: the official layouts parse; every kind of malformed file gets one clear
error naming file, record and field, and never the text of a note."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinical_t5x.data import downstream, synth_downstream
from clinical_t5x.data.downstream import DownstreamDataError

SECRET = "SECRETNOTETEXT"  # planted in the malformed records: must never reach a message
SIZES = {"mednli": (12, 6, 6), "radqa": (6, 3, 3), "clip": (4, 2, 2)}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("downstream")
    synth_downstream.write_downstream(out, seed=3, sizes=SIZES)
    return out


def _copy(root: Path, name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for path in (root / name).iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _error(read, *args) -> str:
    with pytest.raises(DownstreamDataError) as info:
        read(*args)
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_synthetic_files_parse(root):
    for split, (pairs, reports, docs) in zip(downstream.SPLITS, zip(*SIZES.values())):
        assert len(downstream.read_mednli(root / "mednli", split)) == pairs
        questions = downstream.read_radqa(root / "radqa", split)
        assert len({q.title for q in questions}) == reports
        assert all(q.context[a.start:a.start + len(a.text)] == a.text for q in questions for a in q.answers)
        documents = downstream.read_clip(root / "clip", split)
        assert len(documents) == docs
        assert all(s.index == i for d in documents for i, s in enumerate(d.sentences))


def test_note_row_ids(root):
    ids = downstream.note_row_ids(root)
    assert set(ids) == {"radqa", "clip"}
    titles = {int(q.title) for split in downstream.SPLITS for q in downstream.read_radqa(root / "radqa", split)}
    assert ids["radqa"] == titles
    docs = {d.doc_id for split in downstream.SPLITS for d in downstream.read_clip(root / "clip", split)}
    assert ids["clip"] == docs
    assert downstream.note_row_ids(root / "clip") == {"clip": docs}
    assert downstream.note_row_ids(root / "mednli") == {}


def test_folder_without_files(tmp_path):
    assert str(tmp_path) in _error(downstream.note_row_ids, tmp_path)


def test_invalid_utf8(root, tmp_path):
    folder = _copy(root, "clip", tmp_path)
    path = folder / downstream.CLIP_SENTENCES
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6][:20] + b"\xff" + SECRET.encode() + lines[6][20:]
    path.write_bytes(b"\n".join(lines))
    assert _error(downstream.read_clip, folder, "train") == f"{path}: line 7: not valid UTF-8"


def test_missing_split_file(root, tmp_path):
    folder = _copy(root, "mednli", tmp_path)
    (folder / "mli_dev_v1.jsonl").unlink()
    assert "mli_dev_v1.jsonl: missing" in _error(downstream.read_mednli, folder, "validation")


# ---- MedNLI -----------------------------------------------------------------------------


def _edit_mednli_line(folder: Path, line: int, edit) -> None:
    path = folder / "mli_train_v1.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("".join(lines))


def _record_edit(change):
    def edit(line: str) -> str:
        record = json.loads(line)
        record["sentence1"] = SECRET
        change(record)
        return json.dumps(record) + "\n"
    return edit


@pytest.mark.parametrize("change, field, problem", [
    (lambda r: r.pop("sentence2"), "sentence2", "missing"),
    (lambda r: r.update(gold_label=SECRET), "gold_label", "not one of"),
    (lambda r: r.update(pairID=7), "pairID", "must be str"),
])
def test_mednli_bad_record(root, tmp_path, change, field, problem):
    folder = _copy(root, "mednli", tmp_path)
    _edit_mednli_line(folder, 3, _record_edit(change))
    message = _error(downstream.read_mednli, folder, "train")
    assert message.startswith(f"{folder / 'mli_train_v1.jsonl'}: line 3")
    assert f"field {field!r}: {problem}" in message


def test_mednli_truncated_line(root, tmp_path):
    folder = _copy(root, "mednli", tmp_path)
    _edit_mednli_line(folder, 5, lambda line: line[:40] + SECRET)
    message = _error(downstream.read_mednli, folder, "train")
    assert "mli_train_v1.jsonl: line 5: not valid JSON" in message


def test_mednli_error_names_pair_id(root, tmp_path):
    folder = _copy(root, "mednli", tmp_path)
    pair_id = downstream.read_mednli(folder, "train")[1].pair_id
    _edit_mednli_line(folder, 2, _record_edit(lambda r: r.update(gold_label="maybe")))
    assert f"line 2 (pairID {pair_id!r})" in _error(downstream.read_mednli, folder, "train")


def test_mednli_duplicate_pair_id(root, tmp_path):
    folder = _copy(root, "mednli", tmp_path)
    first = downstream.read_mednli(folder, "train")[0].pair_id
    _edit_mednli_line(folder, 4, _record_edit(lambda r: r.update(pairID=first)))
    message = _error(downstream.read_mednli, folder, "train")
    assert f"line 4 (pairID {first!r}): field 'pairID': duplicate id" in message


# ---- RadQA ------------------------------------------------------------------------------


def _edit_radqa(folder: Path, change) -> None:
    path = folder / "train.json"
    data = json.loads(path.read_text())
    qa = data["data"][1]["paragraphs"][0]["qas"][1]
    data["data"][1]["paragraphs"][0]["context"] += SECRET
    change(qa)
    path.write_text(json.dumps(data))


def _make_answerable_with(text: str, start: int):
    return lambda qa: qa.update(is_impossible=False, answers=[{"text": text, "answer_start": start}])


@pytest.mark.parametrize("change, field, problem", [
    (lambda qa: qa.pop("question"), "question", "missing"),
    (lambda qa: qa.update(is_impossible="no"), "is_impossible", "must be bool"),
    (_make_answerable_with(SECRET, 0), "answer_start", "not at this offset"),
    (lambda qa: qa.update(is_impossible=False, answers=[]), "answers", "empty, but is_impossible"),
])
def test_radqa_bad_question(root, tmp_path, change, field, problem):
    folder = _copy(root, "radqa", tmp_path)
    _edit_radqa(folder, change)
    message = _error(downstream.read_radqa, folder, "train")
    assert message.startswith(f"{folder / 'train.json'}: data[1] (title ")
    assert "paragraphs[0] qas[1]" in message and f"field {field!r}: " in message and problem in message


def test_radqa_duplicate_question_id(root, tmp_path):
    folder = _copy(root, "radqa", tmp_path)
    first = downstream.read_radqa(folder, "train")[0].qa_id
    _edit_radqa(folder, lambda qa: qa.update(id=first))
    message = _error(downstream.read_radqa, folder, "train")
    assert f"paragraphs[0] qas[1] (id {first!r}): field 'id': duplicate id" in message


def test_radqa_title_must_be_row_id(root, tmp_path):
    folder = _copy(root, "radqa", tmp_path)
    path = folder / "train.json"
    data = json.loads(path.read_text())
    data["data"][0]["title"] = SECRET
    path.write_text(json.dumps(data))
    assert "data[0]: field 'title': must be a MIMIC-III note ROW_ID" in _error(downstream.read_radqa, folder, "train")


def test_radqa_truncated_json(root, tmp_path):
    folder = _copy(root, "radqa", tmp_path)
    path = folder / "dev.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    message = _error(downstream.read_radqa, folder, "validation")
    assert message.startswith(f"{path}: line 1: not valid JSON") and "truncated" in message


# ---- CLIP -------------------------------------------------------------------------------


def _edit_clip(folder: Path, line: int, new_line: str) -> None:
    path = folder / downstream.CLIP_SENTENCES
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = new_line
    path.write_text("".join(lines))


def _doc_id(folder: Path, line: int) -> str:
    return (folder / downstream.CLIP_SENTENCES).read_text().splitlines()[line - 1].split(",")[0]


@pytest.mark.parametrize("row, field, problem", [
    ('{doc},"[\'Call\', \'{secret}\'",[]\n', "sentence", "not a Python-literal list"),  # unbalanced
    ('{doc},"[\'Call\']","[\'I-{secret}\']"\n', "labels", "one of the 7 CLIP label names"),
    ('{doc},"[\'Call\']","[\'Lab-related followup\']"\n', "labels", "'I-'"),
    ('{doc},"[\'Call\', __import__(\'os\')]",[]\n', "sentence", "not a Python-literal list"),
    ('x{secret},"[\'Call\']",[]\n', "doc_id", "ROW_ID"),
])
def test_clip_bad_row(root, tmp_path, row, field, problem):
    folder = _copy(root, "clip", tmp_path)
    _edit_clip(folder, 4, row.format(doc=_doc_id(folder, 4), secret=SECRET))
    message = _error(downstream.read_clip, folder, "train")
    assert message.startswith(f"{folder / downstream.CLIP_SENTENCES}: line 4")
    assert f"field {field!r}" in message and problem in message


def test_clip_missing_field_and_column(root, tmp_path):
    folder = _copy(root, "clip", tmp_path)
    _edit_clip(folder, 3, f'{_doc_id(folder, 3)},"[\'{SECRET}\']"\n')
    assert "line 3: fewer fields than the header's 3" in _error(downstream.read_clip, folder, "train")
    _edit_clip(folder, 1, "doc_id,sentence,label\n")
    assert "header: field 'labels': missing column" in _error(downstream.read_clip, folder, "train")


def test_clip_ids_files(root, tmp_path):
    folder = _copy(root, "clip", tmp_path)
    ids = (folder / "val_ids.csv").read_text().splitlines()
    (folder / "val_ids.csv").write_text("\n".join([ids[0], "12345678901234567890x"]) + "\n")
    assert "val_ids.csv: line 2: must be a MIMIC-III note ROW_ID" in _error(downstream.read_clip, folder, "validation")
    (folder / "val_ids.csv").write_text("999\n")
    assert "val_ids.csv: doc_id 999: has no sentences" in _error(downstream.read_clip, folder, "validation")


def test_check_command(root, tmp_path, capsys):
    assert downstream.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert f"mednli train: {SIZES['mednli'][0]} pairs" in out and "clip test:" in out
    folder = _copy(root, "mednli", tmp_path)
    _edit_mednli_line(folder, 1, lambda line: line[:10])
    assert downstream.main([str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clinical-t5x check-downstream: error: ")
