"""MIMIC readers and re-saved-duplicate detection, on small hand-made synthetic files."""

from __future__ import annotations

import csv
import gzip
import io

import pytest

from clinical_t5x.data import mimic
from clinical_t5x.data.dedup import ResavedDuplicates, storetime_seconds

M3_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
             "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
M4_HEADER = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]


def m3_row(row_id, subject, text, category="Nursing", charttime="2150-01-01 10:00:00",
           storetime="2150-01-01 11:00:00", cgid="17", iserror=""):
    return [row_id, subject, "100", "2150-01-01", charttime, storetime, category, "Report", cgid, iserror, text]


def csv_bytes(rows, header=M3_HEADER) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write(path, data: bytes, compress: bool):
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def test_reads_plain_and_gzip_alike_with_multiline_text(tmp_path):
    rows = [m3_row(1, 7, 'Line one, "quoted"\nline two\r\nline three', category="Physician "),
            m3_row(2, 8, "Short synthetic note", cgid="", iserror="1")]
    data = csv_bytes(rows)
    plain = list(mimic.NoteReader(write(tmp_path / "n.csv", data, False), mimic.MIMIC3))
    packed = list(mimic.NoteReader(write(tmp_path / "n.csv.gz", data, True), mimic.MIMIC3))
    assert plain == packed
    first, second = plain
    assert first.text == 'Line one, "quoted"\nline two\r\nline three'
    assert (first.row, first.note_id, first.subject_id, first.category) == (1, "1", 7, "Physician")
    assert first.duplicate_key is not None and not first.iserror
    assert second.iserror and second.duplicate_key is None  # empty CGID: never a duplicate


TRICKY_TEXTS = ['He said ""no"", twice', 'a,b\n"quoted line"\n', "\r\nwindows\r\nlines\r\n", '"', '""',
                "", "plain", "ends with newline\n", "x" * 300]


def test_chunks_cut_only_between_records(tmp_path):
    rows = [m3_row(i, i % 5 + 1, text) for i, text in enumerate(TRICKY_TEXTS * 3, 1)]
    data = csv_bytes(rows)
    path = write(tmp_path / "t.csv.gz", data, True)
    expected = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    for chunk_bytes in (1, 7, 64, 1 << 20):
        chunks = mimic.RecordChunks(path, mimic.MIMIC3, chunk_bytes=chunk_bytes)
        pieces = list(chunks)
        assert b"".join(c.data for c in pieces) == data[data.index(b"\n") + 1:]
        assert [c.index for c in pieces] == list(range(len(pieces)))
        if chunk_bytes < 64:
            assert len(pieces) > 10
        notes = list(mimic.NoteReader(path, mimic.MIMIC3, chunk_bytes=chunk_bytes))
        assert [(n.note_id, n.text) for n in notes] == [(r[0], r[-1]) for r in expected]
        assert len({n.row for n in notes}) == len(notes)
    lines = [n.line for n in mimic.NoteReader(path, mimic.MIMIC3, chunk_bytes=7)]
    reader = csv.reader(io.StringIO(data.decode(), newline=""))
    assert lines == [reader.line_num for _ in reader][1:]


def test_unbalanced_quotes_stay_bounded_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(mimic, "MAX_RECORD_BYTES", 256)
    data = csv_bytes([m3_row(i, i, f"note {i}") for i in range(1, 60)])
    data = data.replace(b",Report,", b',Rep"ort,', 1)  # a stray quote in an unquoted field
    reader = mimic.NoteReader(write(tmp_path / "q.csv", data, False), mimic.MIMIC3, chunk_bytes=64)
    items = list(reader)
    assert reader.rows == len(items) and reader.error is None
    assert sum(isinstance(i, mimic.Note) for i in items) > 30


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = write(tmp_path / "NOTEEVENTS.csv", csv_bytes([m3_row(1, 7, "synthetic")]), True)
    assert [n.text for n in mimic.NoteReader(path, mimic.MIMIC3)] == ["synthetic"]


def test_missing_column_names_column_and_file(tmp_path):
    header = [c for c in M3_HEADER if c != "CGID"]
    path = write(tmp_path / "bad.csv", csv_bytes([], header=header), False)
    with pytest.raises(ValueError, match=r"bad\.csv.*CGID"):
        mimic.check_header(path, mimic.MIMIC3)
    with pytest.raises(ValueError, match="empty file"):
        mimic.check_header(write(tmp_path / "empty.csv", b"", False), mimic.MIMIC3)


def test_header_with_unbalanced_quote_is_an_error_not_a_whole_file_read(tmp_path, monkeypatch):
    monkeypatch.setattr(mimic, "MAX_HEADER_BYTES", 1000)
    path = write(tmp_path / "m.csv", b'ROW_ID,"SUBJECT_ID\n' + b'1,2,"note"\n' * 500, False)
    for read in (lambda: mimic.check_header(path, mimic.MIMIC3), lambda: list(mimic.RecordChunks(path, mimic.MIMIC3))):
        with pytest.raises(ValueError, match="m.csv: no header line within the first 1000 bytes"):
            read()


def test_malformed_rows_are_reported_by_row_without_text(tmp_path):
    secret = "SYNTHETIC-SECRET-TEXT"
    data = csv_bytes([m3_row(1, 7, "fine"), m3_row(2, "x7", secret), m3_row("id", 7, secret)])
    data += b'3,7,short row,"' + secret.encode() + b'"\n'
    reader = mimic.NoteReader(write(tmp_path / "m.csv", data, False), mimic.MIMIC3)
    items = list(reader)
    assert [type(i).__name__ for i in items] == ["Note", "Malformed", "Malformed", "Malformed"]
    assert [i.row for i in items] == [1, 2, 3, 4]
    assert "fields" in items[3].why and all(secret not in i.why for i in items[1:])
    assert reader.rows == 4 and reader.error is None


def test_ids_that_int64_cannot_hold_are_malformed_not_a_crash(tmp_path):
    rows = [m3_row(1, "\u00b2", "fine"), m3_row(2, "9" * 20, "fine"), m3_row(3, 2**63 - 1, "fine")]
    items = list(mimic.NoteReader(write(tmp_path / "m.csv", csv_bytes(rows), False), mimic.MIMIC3))
    assert [type(i).__name__ for i in items] == ["Malformed", "Malformed", "Note"]
    assert items[2].subject_id == 2**63 - 1


def test_truncated_gzip_keeps_rows_read_and_names_file(tmp_path):
    rows = [m3_row(i, i, f"synthetic note number {i} " * 50) for i in range(1, 400)]
    packed = gzip.compress(csv_bytes(rows), mtime=0)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    reader = mimic.NoteReader(path, mimic.MIMIC3)
    items = list(reader)  # no exception
    assert 0 < len(items) < len(rows) and all(isinstance(i, mimic.Note) for i in items)
    assert reader.rows == len(items)
    assert "cut.csv.gz" in reader.error and "truncated gzip" in reader.error


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    data = csv_bytes([m3_row(1, 7, "caf\u00e9 ok"), m3_row(2, 7, "XbadX")])
    data = data.replace(b"XbadX", b"\xff\xfebad")
    reader = mimic.NoteReader(write(tmp_path / "u.csv", data, False), mimic.MIMIC3)
    notes = list(reader)
    assert notes[0].text == "caf\u00e9 ok"
    assert notes[1].text == "\ufffd\ufffdbad"
    assert reader.invalid_utf8_bytes == 2
    assert list(reader) == notes and reader.invalid_utf8_bytes == 2  # per pass, not cumulative


def test_nul_bytes_blank_lines_and_a_10mb_note(tmp_path):
    big = "synthetic " * 1_000_000
    data = csv_bytes([m3_row(1, 7, "a\x00b"), m3_row(2, 7, big)]) + b"\n\n"
    reader = mimic.NoteReader(write(tmp_path / "b.csv", data, False), mimic.MIMIC3)
    notes = list(reader)
    assert notes[0].text == "a\x00b" and len(notes[1].text) == len(big) == 10_000_000
    assert reader.blank_lines == 2 and reader.rows == 2


def test_mimic4_schema_and_directory(tmp_path):
    note_dir = tmp_path / "note"
    note_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="note"):
        mimic.find_mimic4_files(note_dir)
    rows = [["10000032-DS-21", "10000032", "1", "DS", "21", "", "", "Name: ___ synthetic"]]
    write(note_dir / "discharge.csv.gz", csv_bytes(rows, M4_HEADER), True)
    found = mimic.find_mimic4_files(note_dir)
    assert list(found) == [mimic.MIMIC4_DISCHARGE]
    (note,) = mimic.NoteReader(found[mimic.MIMIC4_DISCHARGE], mimic.MIMIC4_DISCHARGE)
    assert (note.note_id, note.subject_id, note.category) == ("10000032-DS-21", 10000032, "DS")
    assert note.duplicate_key is None and not note.iserror


def test_resaved_duplicates_keep_latest_storetime():
    dups = ResavedDuplicates()
    dups.add("k1", "2150-01-01 10:00:00", 1)
    dups.add("k1", "2150-01-01 12:00:00", 2)  # latest: kept
    dups.add("k1", "2150-01-01 11:00:00", 3)
    dups.add("k2", "", 4)  # no storetime loses to a stored one
    dups.add("k2", "2150-01-01 09:00:00", 5)
    dups.add("k3", "2150-01-01 09:00:00", 6)  # tie: the later row wins
    dups.add("k3", "2150-01-01 09:00:00", 7)
    dups.add("k4", "2150-01-01 09:00:00", 8)  # alone: kept
    assert dups.losers() == {1, 3, 4, 6}
    assert ResavedDuplicates().losers() == frozenset()
    assert storetime_seconds("not a time") == -1
    assert storetime_seconds("2150-01-01 00:00:01") - storetime_seconds("2150-01-01 00:00:00") == 1
    assert storetime_seconds("2150-01-01T02:00:00+02:00") == storetime_seconds("2150-01-01 00:00:00")
    assert storetime_seconds("0001-01-01T00:00:00+05:00") == -1
