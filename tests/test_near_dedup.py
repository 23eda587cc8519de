"""Near-duplicate detection: masking, shingles, the keep policy, and recall/precision on the
synthetic corpus's planted duplicates through `prepare --dedup near`."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from clinical_t5x.data import deid, near_dedup, prepare, shards, synth
from clinical_t5x.data.near_dedup import NearOptions, Sketches

NOTES, SEED = 1200, 3
BODY = " ".join(f"finding{i} stable overnight per report" for i in range(40))


def test_words_mask_every_deid_family_alike():
    mimic3 = "Seen by Dr. [**Last Name (NamePattern1) 123**] on [**2150-1-2**]."
    mimic4 = "Seen by Dr. ___ on ___."
    prepared = "Seen by Dr. [Name] on [DAY]."
    assert near_dedup.words(mimic3) == near_dedup.words(mimic4) == near_dedup.words(prepared) == [
        b"seen", b"by", b"dr", b"deid", b"on", b"deid"]
    assert near_dedup.words("a ____ form line") == [b"a", b"____", b"form", b"line"]  # not a blank


WORD_CASES = [
    "Temp 37.9 °C, UOP ~30–50 cc/hr, creat 1.2 → 1.0 ± mild, a naïve response to 0.1 µg/kg/min",
    "ÉCOLE İstanbul \u212a ΟΔΟΣ straße ǅ e\u0301 x\ud800y \t\x0c\x1c tab_sep __init__ ½ ²",
    "",
    "eightchr eightchrs ninechars9 sixteen_chars_ab sixteen_chars_ac seventeen_chars_a eightchr",
    "nul\x00inside [**Last Name 12**] ___ [Name] a_b ____ " + "x" * 40 + " " + "x" * 39 + "y",
]


@pytest.mark.parametrize("text", WORD_CASES)
def test_words_are_regex_words_of_the_lowercased_masked_text(text):
    """The fast tokeniser cuts exactly what `\\w+` finds in the lowercased masked text,
    non-ASCII letters, digits, combining marks and context-dependent lowercasing included."""
    expected = re.findall(r"\w+", deid.mask(text, " deid ").lower())
    assert near_dedup.words(text) == [w.encode("utf-8") for w in expected]


def test_word_hashes_follow_the_words_of_each_text():
    """Batched texts get one hash per word that `words` cuts, in order, equal exactly where
    the words are equal (long words, unicode, placeholders and NULs included), and the hashes
    each text gets alone: no word runs into the next text."""
    hashes, counts = near_dedup.word_hashes(WORD_CASES)
    assert counts.tolist() == [len(near_dedup.words(t)) for t in WORD_CASES]
    all_words = [w for t in WORD_CASES for w in near_dedup.words(t)]
    for (w1, h1), (w2, h2) in itertools.combinations(zip(all_words, hashes.tolist()), 2):
        assert (w1 == w2) == (h1 == h2), (w1, w2)
    alone = [near_dedup.word_hashes([t])[0] for t in WORD_CASES]
    assert hashes.tolist() == np.concatenate(alone).tolist()


def _shingles(words: list[str], size: int = 3) -> list[int]:
    hashes, counts = near_dedup.word_hashes([" ".join(words)])
    return near_dedup.shingle_hashes(hashes, counts, size)[0].tolist()


def test_shingles_are_ordered_word_windows():
    abcd = _shingles(["a", "b", "c", "d"])
    assert len(abcd) == 2 and abcd[0] != abcd[1]
    assert _shingles(["x", "b", "c", "d"])[1] == abcd[1]  # same window, same shingle
    assert _shingles(["c", "b", "a"]) != abcd[:1]  # order counts
    assert len(_shingles(["a", "b"])) == 1 and _shingles(["a", "b"]) != _shingles(["b", "a"])


def test_shingles_of_a_batch_are_each_notes_own():
    """Notes batched together (long, short, one word) get the windows each gets alone: no
    window reaches into the next note."""
    notes = [["a", "b", "c", "d", "e"], ["b"], ["c", "d"], ["a", "b", "c"], ["e", "f", "g", "h"], ["z"]]
    hashes, counts = near_dedup.word_hashes([" ".join(note) for note in notes])
    flat, offsets = near_dedup.shingle_hashes(hashes, counts, 3)
    batch = [flat[a:b].tolist() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    assert batch == [_shingles(note) for note in notes]
    assert [len(s) for s in batch] == [3, 1, 1, 1, 2, 1]


def test_notes_without_words_are_not_sketched():
    """Only notes with words get a sketch, and every field stays with its own note."""
    s = Sketches()
    s.add("mimic4_radiology", [(1, 10, "  ... --- ", False), (2, 20, BODY, True), (3, 30, "", False),
                               (4, 40, "one two", False)], NearOptions(num_perm=16, bands=4))
    assert (list(s.rows), list(s.subjects), list(s.downstream)) == ([2, 4], [20, 40], [1, 0])
    assert list(s.sizes) == [len(near_dedup.words(BODY)), 2] and s.source_names() == ["mimic4_radiology"] * 2
    assert s.matrix(16).shape == (2, 16) and s.matrix(16).dtype == np.uint32


def test_similar_pairs_are_the_band_sharing_pairs_over_the_threshold():
    """Against brute force over every pair: LSH with 4 bands of 4 rows finds exactly the pairs
    that agree on a whole band and on at least `threshold` of all values (noisy copies give
    pairs over the threshold that share no band, and band-sharing pairs under it)."""
    rng = np.random.default_rng(0)
    digests = np.repeat(rng.integers(0, 2**32, size=(40, 16), dtype=np.uint32), 5, axis=0)
    noise = rng.random(digests.shape) < 0.15
    digests[noise] = rng.integers(0, 2**32, size=int(noise.sum()), dtype=np.uint32)
    sketches = Sketches(digests=[digests[:77], digests[77:]])  # blocks as merged from chunks
    similar, banded = set(), set()
    for i, j in itertools.combinations(range(len(digests)), 2):
        if (digests[i] == digests[j]).mean() >= 0.75:
            similar.add((i, j))
        if any((digests[i, b:b + 4] == digests[j, b:b + 4]).all() for b in range(0, 16, 4)):
            banded.add((i, j))
    assert similar - banded and banded - similar and len(similar & banded) > 50
    found = near_dedup.similar_pairs(sketches, NearOptions(num_perm=16, bands=4, threshold=0.75))
    assert found.tolist() == sorted(map(list, similar & banded))


def test_options_are_checked():
    with pytest.raises(ValueError, match="multiple"):
        NearOptions(num_perm=128, bands=12)
    with pytest.raises(ValueError, match="threshold"):
        NearOptions(threshold=0.0)


def _sketches(*notes: tuple[str, int, str]) -> Sketches:
    found = Sketches()
    for source, row, text in notes:
        found.add(source, [(row, row, text, False)], NearOptions())
    return found


def test_policy_keeps_mimic4_then_longest_then_latest():
    s = _sketches(("mimic3", 1, BODY + " extra words here"), ("mimic4_discharge", 2, BODY),  # IV wins
                  ("mimic3", 3, "other " + BODY.replace("finding", "result")),  # shorter: loses
                  ("mimic3", 4, "other " + BODY.replace("finding", "result") + " and more"),
                  ("mimic3", 5, "third " + BODY.replace("finding", "sign")),  # same length:
                  ("mimic3", 6, "third " + BODY.replace("finding", "sign")),  # the later wins
                  ("mimic3", 7, "an unrelated short note"))
    pairs = near_dedup.similar_pairs(s, NearOptions())
    clusters = near_dedup.resolve(s, pairs, np.ones(len(s), bool))
    assert [s.rows[k] for k in clusters.losers] == [1, 3, 5]
    assert clusters.histogram == {2: 3}


def test_a_dropped_note_neither_clusters_nor_links():
    s = _sketches(("mimic3", 1, BODY), ("mimic3", 2, BODY + " x"), ("mimic3", 3, BODY + " x y"))
    pairs = near_dedup.similar_pairs(s, NearOptions())
    clusters = near_dedup.resolve(s, pairs, np.array([True, False, True]))
    assert [s.rows[k] for k in clusters.losers] == [1] and clusters.histogram == {2: 1}


def test_unrelated_notes_are_not_pairs():
    texts = synth.synthetic_notes(60, 11)
    s = Sketches()
    s.add("mimic3", [(row, row, text + f" unique{row}", False) for row, text in enumerate(texts)], NearOptions())
    resaves = {(i - 1, i) for i in range(24, 60, 25)}  # synth re-saves row i-1 of these (edited)
    assert set(map(tuple, near_dedup.similar_pairs(s, NearOptions()).tolist())) <= resaves | {
        (a, b) for a in range(60) for b in range(a + 1, 60) if texts[b].startswith(texts[a][:200])}


def _kept(out) -> set[tuple[str, str]]:
    return {(r["source"], r["note_id"]) for p in sorted(out.glob("*/*.tfrecord")) for r in shards.read_examples(p)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("near")
    raw = synth.write_synthetic(root / "raw", notes=NOTES, seed=SEED)
    manifests = {mode: prepare.run(raw["mimic3"], root / "raw" / "note", out=root / mode, dedup=mode,
                                   progress=False, chunk_bytes=1 << 16) for mode in ("exact", "near")}
    return root, manifests


def test_near_dedup_recall_and_precision_on_planted_duplicates(runs):
    """Recall 1.0 and precision 1.0 on the synthetic corpus (seed 3): every planted original is
    dropped (its copy kept: longer, or the MIMIC-IV copy), and nothing else."""
    root, manifests = runs
    dropped = _kept(root / "exact") - _kept(root / "near")
    truth = {p.original for p in synth.planted_duplicates(NOTES, SEED)}
    assert len(truth) >= 40
    found = dropped & truth
    recall, precision = len(found) / len(truth), len(found) / len(dropped)
    assert (recall, precision) == (1.0, 1.0)
    assert all(p.copy not in dropped for p in synth.planted_duplicates(NOTES, SEED))


def test_near_manifest_accounts_for_every_drop(runs):
    _, manifests = runs
    exact, near = manifests["exact"], manifests["near"]
    total = sum(v["notes"] for split in near["kept"].values() for v in split.values())
    assert near["rows_read"] == exact["rows_read"] == total + sum(near["dropped"].values())
    report = near["near_duplicates"]
    assert sum(report["dropped"].values()) == near["dropped"]["near_duplicate"] > 0
    assert sum((int(size) - 1) * n for size, n in report["cluster_sizes"].items()) == near["dropped"]["near_duplicate"]
    assert near["dropped"]["duplicate"] == exact["dropped"]["duplicate"]
    assert near["options"]["near"] == {"shingle_words": 5, "num_perm": 128, "bands": 16, "threshold": 0.8, "seed": 0}
    assert "near_duplicates" not in exact


def test_off_keeps_resaves(tmp_path):
    raw = synth.write_synthetic(tmp_path / "raw", notes=100, seed=1)
    manifest = prepare.run(raw["mimic3"], out=tmp_path / "out", dedup="off", progress=False)
    assert manifest["dropped"]["duplicate"] == 0 and manifest["dropped"]["near_duplicate"] == 0
    with pytest.raises(ValueError, match="dedup must be one of"):
        prepare.run(raw["mimic3"], out=tmp_path / "out2", dedup="fuzzy", progress=False)
