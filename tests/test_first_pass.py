"""The first pass's decisions: which source sketches what, and drops in the right order."""

from __future__ import annotations

import pytest

from clinical_t5x.data import first_pass
from clinical_t5x.data.first_pass import Scan
from clinical_t5x.data.mimic import ROWS_PER_CHUNK
from clinical_t5x.data.near_dedup import NearOptions

SOURCES = ("mimic3", "mimic4_discharge", "mimic4_radiology")
TEXT = " ".join(f"item{i} was reviewed today" for i in range(40))


def test_plans_sketch_mimic4_only_when_needed():
    near = NearOptions()
    exact = first_pass.plans(SOURCES, "exact", frozenset(), near)
    assert exact["mimic3"].keys and not any(p.needed for s, p in exact.items() if s != "mimic3")
    named = first_pass.plans(SOURCES, "exact", frozenset({5}), near)
    assert named["mimic3"].downstream_rows == {5} and not named["mimic3"].sketch_kept
    assert named["mimic4_radiology"].sketch_kept and not named["mimic4_radiology"].downstream_rows
    off = first_pass.plans(SOURCES, "off", frozenset(), near)
    assert not any(p.needed for p in off.values())
    assert all(p.sketch_kept for p in first_pass.plans(SOURCES, "near", frozenset(), near).values())
    with pytest.raises(ValueError, match="dedup must be one of"):
        first_pass.plans(SOURCES, "fuzzy", frozenset(), near)


def test_decide_orders_downstream_then_resaves_then_near():
    near = NearOptions()
    scans = {source: Scan() for source in SOURCES}
    m3, m4 = scans["mimic3"], scans["mimic4_discharge"]
    m3.sketches.add("mimic3", 1, 100, TEXT, near, downstream=True)  # a benchmark's note
    m4.sketches.add("mimic4_discharge", 1, 900, TEXT + " again", near)  # its MIMIC-IV copy
    m3.keys.add("key", "2150-01-01 10:00:00", 2)  # re-saved by row 3
    m3.keys.add("key", "2150-01-01 11:00:00", 3)
    other = TEXT.replace("item", "line")
    m3.sketches.add("mimic3", 3, 200, other, near)
    m3.sketches.add("mimic3", ROWS_PER_CHUNK + 1, 300, other + " more", near)  # row 3 loses to it
    m3.downstream_subjects.add(100)
    decisions = first_pass.decide(scans, "near", near, frozenset({42}))
    assert decisions.subjects == {"mimic3": {42, 100}, "mimic4_discharge": {42, 900}, "mimic4_radiology": {42}}
    assert decisions.for_chunk("mimic3", 0).rows == {2: "duplicate", 3: "near_duplicate"}
    assert decisions.for_chunk("mimic3", 1).rows == {}
    assert decisions.report["near_duplicate_clusters"] == {"2": 1}
    exact = first_pass.decide(scans, "exact", near)
    assert exact.for_chunk("mimic3", 0).rows == {2: "duplicate"} and "near_duplicate_clusters" not in exact.report
