"""The first pass's decisions: which source sketches what, and drops in the right order."""

from __future__ import annotations

import pytest

from clinical_t5x.data import first_pass, prepare, shards, synth
from clinical_t5x.data.first_pass import Scan
from clinical_t5x.data.mimic import ROWS_PER_CHUNK
from clinical_t5x.data.near_dedup import NearOptions
from test_exclusion import write_radqa

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
    m4.sketches.add("mimic4_discharge", [(1, 900, TEXT + " again", False)], near)  # a copy of row 1
    m3.keys.add("key", "2150-01-01 10:00:00", 2)  # re-saved by row 3
    m3.keys.add("key", "2150-01-01 11:00:00", 3)
    other = TEXT.replace("item", "line")
    m3.sketches.add("mimic3", [(1, 100, TEXT, True),  # a benchmark's note
                               (3, 200, other, False),
                               (ROWS_PER_CHUNK + 1, 300, other + " more", False)], near)  # row 3 loses to it
    m3.downstream_subjects.add(100)
    decisions = first_pass.decide(scans, "near", near, frozenset({42}))
    assert decisions.subjects == {"mimic3": {42, 100}, "mimic4_discharge": {42, 900}, "mimic4_radiology": {42}}
    assert decisions.for_chunk("mimic3", 0).rows == {2: "duplicate", 3: "near_duplicate"}
    assert decisions.for_chunk("mimic3", 1).rows == {}
    assert decisions.report["near_duplicate_clusters"] == {"2": 1}
    exact = first_pass.decide(scans, "exact", near)
    assert exact.for_chunk("mimic3", 0).rows == {2: "duplicate"} and "near_duplicate_clusters" not in exact.report


def _content(out) -> dict[tuple[str, str], list[tuple]]:
    """Every written note by (split, source), whichever shard holds it."""
    found: dict[tuple[str, str], list[tuple]] = {}
    for path in sorted(out.glob("*/*.tfrecord")):
        for r in shards.read_examples(path):
            found.setdefault((path.parent.name, r["source"]), []).append(
                (r["note_id"], r["subject_id"], r["category"], r["text"]))
    return {key: sorted(notes) for key, notes in found.items()}


def _counts(manifest: dict) -> dict:
    """The manifest without what depends on the number of workers (shard names, timing)."""
    return {k: v for k, v in manifest.items() if k not in ("shards", "timing", "options")}


@pytest.mark.slow
def test_worker_processes_give_the_same_output_as_one(tmp_path):
    """Scans made in worker processes and merged give the same drops as one process: the same
    notes (and boilerplate-free texts) in every split and source, the same manifest counts,
    with near-dedup, boilerplate lines and downstream exclusion all at work."""
    notes, seed = 300, 5
    raw = synth.write_synthetic(tmp_path / "raw", notes=notes, seed=seed)
    planted = [p for p in synth.planted_duplicates(notes, seed) if p.copy[0] == "mimic4_discharge"][:3]
    write_radqa(tmp_path / "bench" / "radqa", [int(p.original[1]) for p in planted[:2]])
    (tmp_path / "bench" / "subject_ids.csv").write_text(f"{planted[2].copy_subject}\n")
    runs = {workers: prepare.run(raw["mimic3"], tmp_path / "raw" / "note", out=tmp_path / f"w{workers}",
                                 workers=workers, progress=False, chunk_bytes=1 << 15, dedup="near",
                                 dedup_lines=0.05, exclude_downstream=tmp_path / "bench")
            for workers in (1, 3)}
    one, three = runs[1], runs[3]
    assert one["dropped"]["near_duplicate"] > 0 and one["dropped"]["downstream"] > 0
    assert sum(one["boilerplate_lines"]["removed"].values()) > 0
    assert one["downstream"]["patients"]["mimic4_discharge"] == 3
    assert _counts(three) == _counts(one)
    assert _content(tmp_path / "w3") == _content(tmp_path / "w1")
