"""`--exclude-downstream DIR`: reading what the folder names, and prepare dropping exactly the
patients behind it, in MIMIC-III and (through their near-copies) in MIMIC-IV."""

from __future__ import annotations

import json

import pytest

from clinical_t5x.data import exclusion, prepare, shards, synth

NOTES, SEED = 800, 5


def write_radqa(folder, titles: list[int]) -> None:
    """RadQA in its official SQuAD 2.0 layout; only the titles matter here."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.json"), ("validation", "dev.json"), ("test", "test.json")):
        data = [{"title": str(t), "paragraphs": [{"context": "Synthetic report.", "qas": [
            {"id": f"{split}-{t}", "question": "What is seen?", "answers": [], "is_impossible": True}]}]}
            for k, t in enumerate(titles) if k % 3 == ("train", "validation", "test").index(split)]
        (folder / name).write_text(json.dumps({"version": "v2.0", "data": data}))


def test_load_reads_radqa_and_subject_ids(tmp_path):
    write_radqa(tmp_path / "radqa", [11, 12, 13])
    (tmp_path / "subject_ids.csv").write_text("# n2c2\n7\n\n8\n")
    found = exclusion.load(tmp_path)
    assert found.row_ids == {11, 12, 13} and found.subjects == {7, 8}
    assert found.files == {"radqa": 3, "subject_ids": 2}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RadQA, CLIP or subject_ids.csv"):
        exclusion.load(tmp_path)
    (tmp_path / "subject_ids.csv").write_text("12\nabc\n")
    with pytest.raises(ValueError, match=r"subject_ids.csv:2: not a subject id"):
        exclusion.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="downstream folder not found"):
        exclusion.load(tmp_path / "missing")


def _records(out) -> list[dict]:
    return [r for p in sorted(out.glob("*/*.tfrecord")) for r in shards.read_examples(p)]


@pytest.mark.slow
def test_prepare_drops_exactly_the_named_patients_in_both_sources(tmp_path):
    raw = synth.write_synthetic(tmp_path / "raw", notes=NOTES, seed=SEED)
    planted = [p for p in synth.planted_duplicates(NOTES, SEED) if p.copy[0] == "mimic4_discharge"][:3]
    named_rows = [int(p.original[1]) for p in planted]
    write_radqa(tmp_path / "bench" / "radqa", named_rows)
    (tmp_path / "bench" / "subject_ids.csv").write_text("")
    base = prepare.run(raw["mimic3"], tmp_path / "raw" / "note", out=tmp_path / "base", progress=False)
    manifest = prepare.run(raw["mimic3"], tmp_path / "raw" / "note", out=tmp_path / "excl", progress=False,
                           exclude_downstream=tmp_path / "bench")
    by_id = {(r["source"], r["note_id"]): r["subject_id"] for r in _records(tmp_path / "base")}
    expected = {("mimic3", by_id["mimic3", str(row)]) for row in named_rows}
    expected |= {("mimic4_discharge", p.copy_subject) for p in planted}
    removed = [r for r in _records(tmp_path / "base") if (r["source"], r["subject_id"]) in expected]
    kept = {(r["source"], r["note_id"]) for r in _records(tmp_path / "excl")}
    assert kept == set(by_id) - {(r["source"], r["note_id"]) for r in removed}
    report = manifest["downstream"]
    assert report["named"] == {"radqa": 3, "subject_ids": 0}
    assert report["patients"] == {"mimic3": 3, "mimic4_discharge": 3, "mimic4_radiology": 0}
    assert sum(report["notes"].values()) == manifest["dropped"]["downstream"]
    # a patient's re-saves now count as downstream drops (the first reason that applies)
    dropped, before = manifest["dropped"], base["dropped"]
    assert dropped["downstream"] + dropped["duplicate"] == len(removed) + before["duplicate"]
    assert manifest["rows_read"] == base["rows_read"]
