"""Boilerplate lines: counted per note after DEID normalisation, removed above a fraction."""

from __future__ import annotations

import pytest

from clinical_t5x.data import boilerplate, prepare, shards, synth
from clinical_t5x.data.boilerplate import LineCounts

TEMPLATE = "Plan: continue current management per [**Doctor Last Name 12**]."


def test_lines_compare_after_deid_normalisation():
    assert boilerplate.line_hash(TEMPLATE) == boilerplate.line_hash("plan  continue current management per ___.")
    assert boilerplate.line_hash("   ") is None
    assert boilerplate.line_hash("Plan: stop") != boilerplate.line_hash(TEMPLATE)


def test_frequent_counts_notes_not_repeats():
    counts = LineCounts()
    for i in range(10):
        counts.add_note(f"note {i}\n{TEMPLATE}\n{TEMPLATE}" if i < 3 else f"note {i}\nother line")
    other = LineCounts()
    other.add_note("shared\nother line")
    counts.merge(other)
    frequent = counts.frequent(0.25)  # 11 notes: more than 2.75
    assert frequent == {boilerplate.line_hash(TEMPLATE), boilerplate.line_hash("other line")}
    assert counts.frequent(0.7) == {boilerplate.line_hash("other line")}  # in 8 of 11 notes
    assert counts.frequent(0.75) == set()
    assert boilerplate.remove(f"keep\n{TEMPLATE}\nend", frequent) == ("keep\nend", 1)


def test_prepare_removes_and_counts_boilerplate_lines(tmp_path):
    raw = synth.write_synthetic(tmp_path / "raw", notes=150, seed=9)
    manifest = prepare.run(raw["mimic3"], tmp_path / "raw" / "note", out=tmp_path / "out", progress=False,
                           dedup_lines=0.05)
    report = manifest["boilerplate_lines"]
    assert report["frequent_lines"] > 0 and sum(report["removed"].values()) > 0
    assert report["removed"]["mimic4_discharge"] > 0  # its header lines: in every summary, >5% of notes
    texts = [r["text"] for p in (tmp_path / "out").glob("*/mimic4_discharge*") for r in shards.read_examples(p)]
    assert texts and not any("Service: MEDICINE" in t for t in texts)
    total = sum(v["notes"] for split in manifest["kept"].values() for v in split.values())
    assert manifest["rows_read"] == total + sum(manifest["dropped"].values())
    with pytest.raises(ValueError, match="dedup_lines must be in"):
        prepare.run(raw["mimic3"], out=tmp_path / "bad", dedup_lines=1.5, progress=False)
