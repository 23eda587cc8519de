"""`clinical-t5x prepare` end to end on small hand-made and synthetic MIMIC files."""

from __future__ import annotations

import gzip
import json
import stat

import pytest

from clinical_t5x.data import prepare, prepare_worker, shards, synth
from test_mimic import M4_HEADER, csv_bytes, m3_row, write

KEY = dict(charttime="2150-02-02 08:00:00", cgid="99")


def mimic3_fixture(tmp_path):
    """One row per drop reason (and then some); the expected outcome is in the comments."""
    rows = [
        m3_row(1, 1, "Seen at [**Hospital1 18**] today. Synthetic."),  # kept -> [Company]
        m3_row(2, 2, "Error note.", iserror="1"),  # iserror
        m3_row(3, 3, "Synthetic image report.", category="Radiology"),  # category (excluded)
        m3_row(4, 4, "Excluded patient note."),  # excluded_subject
        m3_row(5, 5, "   \n  "),  # empty
        m3_row(6, "abc", "Unparseable subject."),  # malformed
        m3_row(7, 6, "First save.", storetime="2150-02-02 10:00:00", **KEY),  # duplicate
        m3_row(8, 6, "Second save.", storetime="2150-02-02 12:00:00", **KEY),  # kept (latest)
        m3_row(9, 6, "No charttime.", charttime="", cgid="99"),  # kept: missing key
        m3_row(10, 7, "nul\x00here"),  # kept as "nulhere"
        m3_row(11, 8, "XbadX utf8"),  # kept, 2 invalid bytes counted
        m3_row(12, 9, "Doctor note.", category="Physician "),  # kept, category stripped
        m3_row(13, 10, "[** **]"),  # empty after DEID
    ]
    data = csv_bytes(rows).replace(b"XbadX", b"\xff\xfe")
    return write(tmp_path / "NOTEEVENTS.csv.gz", data, True)


def mimic4_fixture(tmp_path):
    note_dir = tmp_path / "note"
    note_dir.mkdir()
    discharge = [["11-DS-1", "11", "1", "DS", "1", "", "", "Name: ___ Unit No: ___ synthetic"],
                 ["12-DS-1", "12", "1", "DS", "1", "", "", "Plain synthetic summary."]]
    radiology = [["11-RR-1", "11", "1", "RR", "1", "", "", "Synthetic chest film ___."]]
    write(note_dir / "discharge.csv.gz", csv_bytes(discharge, M4_HEADER), True)
    write(note_dir / "radiology.csv", csv_bytes(radiology, M4_HEADER), False)
    return note_dir


def all_records(out) -> list[dict]:
    return [r for path in sorted(out.glob("*/*.tfrecord")) for r in shards.read_examples(path)]


def kept_total(manifest) -> int:
    return sum(v["notes"] for split in manifest["kept"].values() for v in split.values())


def test_every_row_is_accounted_for_and_written(tmp_path):
    out = tmp_path / "out"
    manifest = prepare.run(mimic3_fixture(tmp_path), mimic4_fixture(tmp_path), out=out,
                           exclude_categories=["radiology"], exclude_subjects=[4], typed_mimic4=True,
                           validation_fraction=0.0, num_shards=2, progress=False)
    assert manifest["format"] == prepare.FORMAT
    assert manifest["dropped"] == {"iserror": 1, "duplicate": 1, "excluded_subject": 1, "empty": 2,
                                   "malformed": 1, "category": 1, "downstream": 0, "near_duplicate": 0}
    assert manifest["rows_read"] == 16 == kept_total(manifest) + sum(manifest["dropped"].values())
    assert manifest["kept"]["train"]["mimic3"]["notes"] == 6
    m3 = manifest["inputs"]["mimic3"]
    assert m3["invalid_utf8_bytes"] == 2 and m3["notes_with_nul_removed"] == 1
    assert m3["malformed_rows"] == [{"line": 8, "why": "unparseable SUBJECT_ID or ROW_ID"}]
    assert m3["categories"]["Physician"] == 1 and "Physician " not in m3["categories"]
    assert manifest["tags"]["[Company]"] == 1 and manifest["tags"]["[Name]"] == 1
    assert manifest["tags"]["[Reg#]"] == 1 and manifest["deid"]["empty"] == 1
    assert manifest["shards"]["train"]["mimic3"] == ["mimic3-00000-of-00002.tfrecord",
                                                     "mimic3-00001-of-00002.tfrecord"]
    assert manifest["subjects"] == {"train": 7, "validation": 0}
    assert prepare.read_manifest(out) == manifest

    records = {r["note_id"]: r for r in all_records(out)}
    assert sorted(records) == ["1", "10", "11", "11-DS-1", "11-RR-1", "12", "12-DS-1", "8", "9"]
    assert records["1"] == {"text": "Seen at [Company] today. Synthetic.", "note_id": "1",
                            "subject_id": 1, "source": "mimic3", "category": "Nursing"}
    assert records["10"]["text"] == "nulhere"
    assert records["11"]["text"] == "\ufffd\ufffd utf8"
    assert records["12"]["category"] == "Physician"
    assert records["11-DS-1"]["text"] == "Name: [Name] Unit No: [Reg#] synthetic"
    assert records["11-DS-1"]["source"] == "mimic4_discharge"
    assert records["11-RR-1"]["text"] == "Synthetic chest film [MISC]."
    assert records["11-RR-1"]["source"] == "mimic4_radiology"
    assert sum(m["bytes"] for m in manifest["kept"]["train"].values()) == sum(
        len(r["text"].encode()) for r in records.values())


def test_output_is_owner_only_and_not_overwritten_by_accident(tmp_path):
    out = tmp_path / "out"
    prepare.run(mimic3_fixture(tmp_path), out=out, progress=False)
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare.run(mimic3_fixture(tmp_path), out=out, progress=False)
    manifest = prepare.run(mimic3_fixture(tmp_path), out=out, overwrite=True, num_shards=1, progress=False)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["mimic3-00000-of-00001.tfrecord"]
    assert manifest["options"]["num_shards"] == 1


def test_categories_filter_keeps_only_listed(tmp_path):
    manifest = prepare.run(mimic3_fixture(tmp_path), out=tmp_path / "out", categories=["nursing", "Ghost"],
                           progress=False)
    assert kept_total(manifest) == 6 and manifest["dropped"]["category"] == 2
    assert manifest["unmatched_category_filters"] == ["ghost"]
    assert {r["category"] for r in all_records(tmp_path / "out")} == {"Nursing"}


def test_truncated_gzip_is_recorded_not_raised(tmp_path):
    rows = [m3_row(i, i, f"Synthetic note {i}, day {i * 7 % 31}. " * 40) for i in range(1, 300)]
    packed = gzip.compress(csv_bytes(rows), mtime=0)
    path = tmp_path / "NOTEEVENTS.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    manifest = prepare.run(path, out=tmp_path / "out", progress=False)
    (error,) = manifest["errors"]
    assert "NOTEEVENTS.csv.gz" in error and "truncated gzip" in error
    assert 1 < manifest["rows_read"] < 299 and manifest["inputs"]["mimic3"]["error"] == error
    assert manifest["rows_read"] == kept_total(manifest) + sum(manifest["dropped"].values())


def test_a_10mb_note_is_kept_whole(tmp_path):
    path = write(tmp_path / "NOTEEVENTS.csv", csv_bytes([m3_row(1, 1, "synthetic " * 1_000_000)]), False)
    manifest = prepare.run(path, out=tmp_path / "out", progress=False)
    assert kept_total(manifest) == 1
    (record,) = all_records(tmp_path / "out")
    assert len(record["text"]) == 10_000_000


def test_split_by_patient_is_deterministic_and_disjoint(tmp_path):
    assert [prepare.split_of(s, 0.0) for s in range(50)] == ["train"] * 50
    assert [prepare.split_of(s, 1.0) for s in range(50)] == ["validation"] * 50
    share = sum(prepare.split_of(s, 0.1) == "validation" for s in range(20_000)) / 20_000
    assert 0.09 < share < 0.11
    assert prepare.split_of(12345, 0.5) == prepare.split_of(12345, 0.5)

    corpus = synth.write_synthetic(tmp_path / "synth", notes=300, seed=1)
    out = tmp_path / "out"
    manifest = prepare.run(corpus["mimic3"], tmp_path / "synth" / "note", out=out,
                           validation_fraction=0.3, progress=False)
    subjects = {split: {r["subject_id"] for path in (out / split).glob("*.tfrecord")
                        for r in shards.read_examples(path)} for split in shards.SPLITS}
    assert subjects["train"] and subjects["validation"]
    assert not subjects["train"] & subjects["validation"]
    assert manifest["subjects"] == {split: len(ids) for split, ids in subjects.items()}
    for split, ids in subjects.items():
        assert all(prepare.split_of(s, 0.3) == split for s in ids)


def test_two_worker_processes_write_the_same_notes(tmp_path):
    synth.write_synthetic(tmp_path / "synth", notes=400, seed=2)
    inputs = (tmp_path / "synth" / "NOTEEVENTS.csv.gz", tmp_path / "synth" / "note")
    options = dict(num_shards=3, validation_fraction=0.2, chunk_bytes=1 << 14, progress=False)
    one = prepare.run(*inputs, out=tmp_path / "one", **options)
    two = prepare.run(*inputs, out=tmp_path / "two", workers=2, **options)
    assert len(two["timing"]["worker_cpu_s"]) == 2 and all(cpu > 0 for cpu in two["timing"]["worker_cpu_s"])
    assert two["shards"]["validation"]["mimic3"] == ["mimic3-00000-of-00002.tfrecord",
                                                     "mimic3-00001-of-00002.tfrecord"]
    for manifest in (one, two):
        for key in ("options", "timing", "shards"):
            del manifest[key]
        for entry in manifest["inputs"].values():
            entry.pop("path")
    assert one == two
    assert one["dropped"]["duplicate"] > 0 and one["dropped"]["iserror"] > 0
    whole = prepare.run(*inputs, out=tmp_path / "whole", num_shards=3, validation_fraction=0.2, progress=False)
    assert (whole["kept"], whole["dropped"]) == (one["kept"], one["dropped"])  # one chunk, same result
    by_id = [sorted(all_records(tmp_path / name), key=lambda r: (r["source"], r["note_id"]))
             for name in ("one", "two")]
    assert by_id[0] == by_id[1] and len(by_id[0]) == sum(
        v["notes"] for split in one["kept"].values() for v in split.values())


def test_cli_prints_counts_never_text(tmp_path, capsys):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# evaluation patients\n4\n\n")
    code = prepare.main(["--mimic3", str(mimic3_fixture(tmp_path)), "--out", str(tmp_path / "out"),
                         "--exclude-subjects", str(exclude), "--exclude-categories", "Radiology,ECG",
                         "--num-shards", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "kept train" in captured.err and "Synthetic" not in captured.out + captured.err
    manifest = prepare.read_manifest(tmp_path / "out")
    assert manifest["dropped"]["excluded_subject"] == 1 and manifest["options"]["excluded_subjects"] == 1
    assert manifest["options"]["exclude_categories"] == ["ecg", "radiology"]


def test_cli_reports_bad_input_files(tmp_path, capsys):
    bad = write(tmp_path / "NOTEEVENTS.csv", csv_bytes([], header=["ROW_ID", "TEXT"]), False)
    assert prepare.main(["--mimic3", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "NOTEEVENTS.csv" in err and "SUBJECT_ID" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked
    assert prepare.main(["--mimic4-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        prepare.read_manifest(tmp_path)
    subjects = tmp_path / "subjects.txt"
    subjects.write_text("12\nnot-an-id\n")
    with pytest.raises(ValueError, match="subjects.txt:2"):
        prepare.load_subject_ids(subjects)


def test_manifest_is_json_with_the_contract_keys(tmp_path):
    prepare.run(mimic3_fixture(tmp_path), out=tmp_path / "out", progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for key in ("format", "rows_read", "kept", "dropped", "tags", "unknown_labels", "subjects",
                "shards", "inputs", "options"):
        assert key in manifest
    assert set(manifest["kept"]) == set(shards.SPLITS) == set(manifest["shards"])


def test_a_failing_worker_process_raises_instead_of_hanging(tmp_path):
    config = prepare_worker.WorkerConfig(
        out_dir=tmp_path / "missing", sources=("mimic3",), num_shards={"train": 2, "validation": 2},
        workers=2, typed_mimic4=False, validation_fraction=0.0, categories=None,
        exclude_categories=frozenset(), excluded_subjects=frozenset())
    pool = prepare._WorkerProcesses(config)
    try:
        with pytest.raises(RuntimeError, match="prepare worker . failed: FileNotFoundError"):
            pool.finish()
    finally:
        pool.abort()


def test_canaries_keep_the_accounting(tmp_path):
    manifest = prepare.run(mimic3_fixture(tmp_path), mimic4_fixture(tmp_path), out=tmp_path / "out",
                           validation_fraction=0.0, canaries=2, canary_repeats=(3,), progress=False)
    assert manifest["rows_read"] == 16 == kept_total(manifest) + sum(manifest["dropped"].values())
    assert manifest["canaries"]["insertions"] == 6
    assert sum(m["bytes"] for m in manifest["kept"]["train"].values()) == sum(
        len(r["text"].encode()) for r in all_records(tmp_path / "out"))


def test_a_failed_overwrite_delete_stops_the_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare.run(mimic3_fixture(tmp_path), out=out, num_shards=2, progress=False)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(prepare.shutil, "rmtree", refuse)
    with pytest.raises(OSError, match=r"--overwrite could not delete .*Permission denied: .*train"):
        prepare.run(mimic3_fixture(tmp_path), out=out, overwrite=True, num_shards=1, progress=False)
    assert not (out / shards.MANIFEST).exists()  # what is left is never read as finished output


def test_unlisted_shards_on_disk_are_reported(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    stale = "mimic3-00000-of-00009.tfrecord"
    real_make_dir = prepare.owner_only.make_dir

    def make_dir_with_a_stale_shard(path):  # as if an earlier run's file survived in OUT/train
        made = real_make_dir(path)
        if made.name == "train":
            (made / stale).touch()
        return made

    monkeypatch.setattr(prepare.owner_only, "make_dir", make_dir_with_a_stale_shard)
    assert prepare.main(["--mimic3", str(mimic3_fixture(tmp_path)), "--out", str(out),
                         "--no-progress"]) == 0
    assert json.loads((out / shards.MANIFEST).read_text())["unlisted_files"] == [f"train/{stale}"]
    assert f"{out / 'train' / stale} is not in the manifest and will never be read" in \
        capsys.readouterr().err


def test_manifest_names_known_categories_and_only_counts_others(tmp_path):
    rows = [m3_row(1, 1, "Synthetic.", category="Physician "),
            m3_row(2, 2, "Synthetic.", category="Mary Jones seen 3/4"),  # a custom export
            m3_row(3, 3, "Synthetic.", category="Another free text")]
    path = write(tmp_path / "NOTEEVENTS.csv", csv_bytes(rows), False)
    manifest = prepare.run(path, out=tmp_path / "out", progress=False)
    assert manifest["inputs"]["mimic3"]["categories"] == {"(other category)": 2, "Physician": 1}
    assert "Mary" not in json.dumps(manifest)
