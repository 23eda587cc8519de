"""Synthetic MIMIC files: exact schemas, CSV round trip, determinism, coverage of every case."""

import collections
import csv
import gzip
import random
import re
import stat
import sys

import pytest

from clinical_t5x.data import deid, synth

NOTES, SEED = 400, 7

csv.field_size_limit(sys.maxsize)


def _read(path):
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "mimic"
    paths = synth.write_synthetic(out, NOTES, SEED)
    return out, paths, {source: _read(path) for source, path in paths.items()}


def _family_regex(template: str) -> re.Pattern:
    fields = {"{n}": r"\d+", "{k}": r"\d", "{y}": r"\d{4}", "{m}": r"\d{1,2}", "{d}": r"\d{1,2}",
              "{month}": "(?:" + "|".join(synth._MONTH_NAMES) + ")"}
    pattern = re.escape(template)
    for field, regex in fields.items():
        pattern = pattern.replace(re.escape(field), regex)
    return re.compile(pattern)


def test_files_paths_and_owner_only_permissions(corpus):
    out, paths, _ = corpus
    assert paths == {
        "mimic3": out / "NOTEEVENTS.csv.gz",
        "mimic4_discharge": out / "note" / "discharge.csv.gz",
        "mimic4_radiology": out / "note" / "radiology.csv.gz",
    }
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (out, out / "note"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = sorted(p.name for p in out.rglob("*"))
    assert names == ["NOTEEVENTS.csv.gz", "discharge.csv.gz", "note", "radiology.csv.gz"]


def test_exact_headers_and_row_counts(corpus):
    _, _, tables = corpus
    assert tables["mimic3"][0] == list(synth.MIMIC3_COLUMNS) == [
        "ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
        "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
    expected4 = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                 "storetime", "text"]
    for source in ("mimic4_discharge", "mimic4_radiology"):
        assert tables[source][0] == list(synth.MIMIC4_COLUMNS) == expected4
    counts = synth.mimic4_counts(NOTES)
    assert len(tables["mimic3"][1]) == NOTES
    assert len(tables["mimic4_discharge"][1]) == counts["discharge"] == 50
    assert len(tables["mimic4_radiology"][1]) == counts["radiology"] == 100
    for _, rows in tables.values():
        assert len({len(row) for row in rows}) == 1


def test_csv_round_trip_of_multiline_quoted_text(corpus):
    _, _, tables = corpus
    texts = [row[-1] for row in tables["mimic3"][1]]
    assert texts == synth.synthetic_notes(NOTES, SEED)
    joined = "".join(texts)
    assert "\n" in joined and '"' in joined and "," in joined
    assert "\t" in joined and "\u00a0" in joined and "  " in joined
    assert any(ord(ch) > 127 for ch in joined)
    assert len({row[0] for row in tables["mimic3"][1]}) == NOTES  # ROW_ID unique


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synth.write_synthetic(tmp_path / "a", 60, 1)
    b = synth.write_synthetic(tmp_path / "b", 60, 1)
    c = synth.write_synthetic(tmp_path / "c", 60, 2)
    for source in a:
        assert a[source].read_bytes() == b[source].read_bytes()
        assert a[source].read_bytes() != c[source].read_bytes()


def test_real_category_strings_including_trailing_spaces(corpus):
    _, _, tables = corpus
    categories = collections.Counter(row[6] for row in tables["mimic3"][1])
    assert set(categories) == set(synth.CATEGORIES)
    assert {"Physician ", "Respiratory ", "Case Management "} <= set(categories)
    assert categories["Nursing/other"] > categories["Pharmacy"]


def test_missing_charttime_caregiver_and_iserror(corpus):
    _, _, tables = corpus
    rows = tables["mimic3"][1]
    for row in rows:
        if row[6] in ("Discharge summary", "ECG", "Echo"):
            assert row[4] == "" and row[8] == ""
        else:
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[4])
    assert {row[9] for row in rows} == {"", "1"}


def test_resaved_duplicates_have_later_storetime(corpus):
    _, _, tables = corpus
    groups = collections.defaultdict(list)
    for row in tables["mimic3"][1]:
        if row[4] and row[8]:
            groups[(row[4], row[1], row[6], row[8])].append(row)
    duplicates = [g for g in groups.values() if len(g) > 1]
    assert len(duplicates) >= NOTES // 30
    for group in duplicates:
        assert len({row[5] for row in group}) == len(group)  # distinct STORETIMEs
        assert group[-1][5] > group[0][5] and group[-1][10] != group[0][10]


def test_every_placeholder_family_is_present(corpus):
    _, _, tables = corpus
    text = "".join(row[-1] for row in tables["mimic3"][1])
    missing = [t for t, _ in synth.MIMIC3_FAMILIES if not _family_regex(t).search(text)]
    assert not missing


@pytest.mark.parametrize("template,expected", synth.MIMIC3_FAMILIES)
def test_every_family_is_replaced_as_declared(template, expected):
    placeholder = synth._fill(template, random.Random(0))
    replaced = deid.replace_mimic3(placeholder)
    assert replaced == (placeholder[3:-3].strip() if expected == "date" else expected)


def test_deid_covers_every_tag_on_the_corpus(corpus):
    _, _, tables = corpus
    counts = deid.DeidCounts()
    for row in tables["mimic3"][1]:
        assert "[**" not in deid.replace_mimic3(row[-1], counts)
    assert all(counts.tags[tag] > 0 for tag in deid.TAGS)
    # The planted unknown label ("Unmapped Field") is not made of MIMIC label words, so it is
    # counted, never echoed.
    assert counts.unknown_labels.keys() == {"(unreadable label)"}
    assert counts.dates_as_text > 0 and counts.empty > 0


def test_mimic4_note_ids_types_and_typed_blanks(corpus):
    _, _, tables = corpus
    for source, types in (("mimic4_discharge", {"DS", "AD"}), ("mimic4_radiology", {"RR", "AR"})):
        rows = tables[source][1]
        assert {row[3] for row in rows} == types
        for note_id, subject, _, note_type, seq, charttime, _, text in rows:
            assert re.fullmatch(r"1\d{7}-(DS|AD|RR|AR)-\d+", note_id)
            assert note_id == f"{subject}-{note_type}-{seq}"
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", charttime)
            assert "___" in text and "[**" not in text
        assert len({row[0] for row in rows}) == len(rows)
    discharge = "".join(row[-1] for row in tables["mimic4_discharge"][1])
    typed = deid.DeidCounts()
    deid.replace_mimic4(discharge, typed=True, counts=typed)
    assert {"[Name]", "[Reg#]", "[DAY]", "[#]", "[Company]", "[MISC]"} <= set(typed.tags)


def test_synthetic_notes_styles():
    notes4 = synth.synthetic_notes(9, 0, style="mimic4")
    assert len(notes4) == 9 and notes4[0].lstrip().startswith("Name:")
    assert notes4[-1].startswith("EXAMINATION:")
    assert synth.synthetic_notes(5, 3) == synth.synthetic_notes(5, 3)
    with pytest.raises(ValueError, match="style"):
        synth.synthetic_notes(1, 0, style="mimic5")
    with pytest.raises(ValueError, match="notes"):
        synth.write_synthetic("/nonexistent/never", 0, 0)


def test_main_writes_the_files(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path / "cli"), "--notes", "20", "--seed", "3"]) == 0
    assert (tmp_path / "cli" / "note" / "radiology.csv.gz").exists()
    assert "NOTEEVENTS.csv.gz" in capsys.readouterr().out


def test_cli_rejects_no_notes_with_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synth.main(["--out", str(tmp_path / "cli"), "--notes", "0"])
    assert exit_info.value.code == 2 and "--notes must be >= 1" in capsys.readouterr().err


def test_planted_duplicates_are_in_the_files(corpus):
    """The truth the dedup tests score against: each copy is in the files, a copied-forward note
    is its original plus one line, and a MIMIC-IV copy is the summary with `___` blanks."""
    _, _, tables = corpus
    planted = synth.planted_duplicates(NOTES, SEED)
    rows = {source: {row[0]: row for row in table[1]} for source, table in tables.items()}
    kinds = collections.Counter(p.copy[0] for p in planted)
    assert kinds["mimic3"] >= NOTES // 60 and kinds["mimic4_discharge"] >= 3
    for p in planted:
        original, copy = rows[p.original[0]][p.original[1]], rows[p.copy[0]][p.copy[1]]
        if p.copy[0] == "mimic3":
            assert copy[1] == original[1] == str(p.copy_subject) and copy[4] > original[4]
            assert copy[10].startswith(original[10]) and copy[10] != original[10]
        else:
            assert original[6] == "Discharge summary" and copy[1] == str(p.copy_subject)
            assert "[**" not in copy[-1] and deid.mask(copy[-1], "#") == deid.mask(original[10], "#")
