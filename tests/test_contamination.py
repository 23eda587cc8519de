"""`clinical-t5x contamination`: planted 13-word overlaps are found, by id, and nothing else."""

from __future__ import annotations

import ast
import codecs
import csv
import json

import pytest

from clinical_t5x.data import contamination, prepare, shards, synth, synth_downstream
from clinical_t5x.data.downstream import CLIP_SENTENCES, MEDNLI_FILES, RADQA_FILES

SIZES = {"mednli": (20, 5, 5), "radqa": (6, 3, 3), "clip": (4, 2, 2)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("contamination")
    raw = synth.write_synthetic(root / "raw", notes=300, seed=2)
    prepare.run(raw["mimic3"], root / "raw" / "note", out=root / "prepared", progress=False)
    texts = [r["text"] for p in sorted((root / "prepared").glob("*/*.tfrecord")) for r in shards.read_examples(p)]
    return root / "prepared", [t for t in texts if len(contamination.ngrams(t)) > 5]


def _rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def clean_benchmarks(folder) -> dict:
    """Synthetic benchmark files whose words share nothing with the synthetic notes.

    `synth_downstream` builds its texts from the same phrase pool as `synth`'s notes, so they
    do share 13-word n-grams with the corpus (the report finds them). Here every letter is
    ROT13-ed: lengths and offsets stay valid, DEID placeholders stay placeholders, and no word
    is left in common.
    """
    folders = synth_downstream.write_downstream(folder, seed=4, sizes=SIZES)
    for name in MEDNLI_FILES.values():
        _rewrite_jsonl(folders["mednli"] / name, lambda k, r: {
            **r, "sentence1": _rot13(r["sentence1"]), "sentence2": _rot13(r["sentence2"])})
    for name in RADQA_FILES.values():
        path = folders["radqa"] / name
        data = json.loads(path.read_text())
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                paragraph["context"] = _rot13(paragraph["context"])
                for qa in paragraph["qas"]:
                    qa["question"] = _rot13(qa["question"])
                    for answer in qa["answers"]:
                        answer["text"] = _rot13(answer["text"])
        path.write_text(json.dumps(data))
    path = folders["clip"] / CLIP_SENTENCES
    rows = list(csv.reader(path.open()))
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [rows[0]] + [[d, repr([_rot13(t) for t in ast.literal_eval(s)]), labels] for d, s, labels in rows[1:]])
    return folders


def test_clean_benchmarks_report_zero(prepared, tmp_path):
    out, _ = prepared
    clean_benchmarks(tmp_path)
    result = contamination.report(out, tmp_path)
    assert set(result) == {"mednli", "radqa", "clip"}
    for splits in result.values():
        assert set(splits) == {"train", "validation", "test"}
        assert all(r["contaminated"] == 0 and r["ids"] == [] and r["examples"] > 0 for r in splits.values())


def _rewrite_jsonl(path, edit) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(edit(k, rec)) + "\n" for k, rec in enumerate(lines)))


def test_planted_overlaps_are_found_by_id(prepared, tmp_path, capsys):
    out, texts = prepared
    folders = clean_benchmarks(tmp_path)
    window = " ".join(texts[0].split()[:40])  # prepared text, DEID tags and all
    # MedNLI: the test split's pair 2 quotes a prepared note.
    mednli = folders["mednli"] / MEDNLI_FILES["test"]
    planted_pair = json.loads(mednli.read_text().splitlines()[2])["pairID"]
    _rewrite_jsonl(mednli, lambda k, r: {**r, "sentence1": r["sentence1"] + " " + window} if k == 2 else r)
    # RadQA: a dev report ends with another note's words (answers' offsets unchanged).
    radqa_path = folders["radqa"] / RADQA_FILES["validation"]
    radqa = json.loads(radqa_path.read_text())
    article = radqa["data"][1]
    article["paragraphs"][0]["context"] += " " + " ".join(texts[1].split()[:30])
    radqa_path.write_text(json.dumps(radqa))
    planted_qas = [qa["id"] for qa in article["paragraphs"][0]["qas"]]
    # CLIP: one train document gains a sentence copied from a note.
    sentences = folders["clip"] / CLIP_SENTENCES
    doc_id = next(csv.DictReader(sentences.open()))["doc_id"]
    with sentences.open("a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow([doc_id, repr(texts[2].split()[:20]), "[]"])

    result = contamination.report(out, tmp_path)
    assert result["mednli"]["test"]["ids"] == [planted_pair]
    assert result["radqa"]["validation"]["ids"] == planted_qas
    assert result["clip"]["train"]["ids"] == [doc_id]
    assert result["mednli"]["test"]["fraction"] == pytest.approx(1 / 5)
    flagged = {(d, s) for d, splits in result.items() for s, r in splits.items() if r["contaminated"]}
    assert flagged == {("mednli", "test"), ("radqa", "validation"), ("clip", "train")}

    assert contamination.main(["--prepared", str(out), "--data", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert planted_pair in printed and window.split()[5] not in printed.split(":")[-1]


def test_cli_reports_a_folder_without_benchmarks(prepared, tmp_path, capsys):
    out, _ = prepared
    assert contamination.main(["--prepared", str(out), "--data", str(tmp_path)]) == 2
    assert "holds no MedNLI, RadQA or CLIP files" in capsys.readouterr().err
