"""Canaries: secrets drawn from R by seed, planted in distinct training notes only, listed
owner-only outside the shards, and nothing else of prepare's output changed."""

from __future__ import annotations

import json
import re
import stat

import numpy as np
import pytest

from clinical_t5x.data import canaries, prepare, shards, synth


def test_secrets_are_formatted_10_digit_numbers_and_plans_are_seeded():
    assert canaries.format_secret(48271936_05) == "4827 1936 05"
    assert canaries.format_secret(7) == "0000 0000 07"
    plan = canaries.plan(9, (1, 4), seed=5)
    assert plan == canaries.plan(9, (1, 4), seed=5) != canaries.plan(9, (1, 4), seed=6)
    assert [c.repeats for c in plan] == [1, 4] * 4 + [1]
    assert len({c.secret for c in plan}) == 9
    assert all(re.fullmatch(r"\d{4} \d{4} \d{2}", c.secret) for c in plan)
    assert all(c.secret in c.sentence and canaries.PLACEHOLDER in c.template for c in plan)


def test_secrets_are_uniform_over_the_space():
    values = canaries.draw_secrets(np.random.default_rng(0), 20_000)
    assert values.min() >= 0 and values.max() < canaries.SPACE_SIZE
    leading = np.bincount(values // 10**9, minlength=10) / len(values)  # first digit: uniform
    assert np.abs(leading - 0.1).max() < 0.01


def test_parse_repeats_names_bad_input():
    assert canaries.parse_repeats("1,4,16,64") == (1, 4, 16, 64)
    for bad in ("1,x", "0,4", ""):
        with pytest.raises(ValueError, match="canary repeats"):
            canaries.parse_repeats(bad)


def test_hosts_are_distinct_per_canary_and_independent_of_note_order():
    notes = [("mimic3", str(i)) for i in range(50)]
    plan = canaries.plan(4, (1, 4, 16, 50), seed=1)
    hosts = canaries.choose_hosts(plan, notes, seed=1)
    assert [len(set(c.notes)) for c in hosts] == [1, 4, 16, 50]
    assert hosts == canaries.choose_hosts(plan, notes[::-1], seed=1)
    with pytest.raises(ValueError, match="exceed the 50 training notes"):
        canaries.choose_hosts(canaries.plan(1, (51,), seed=1), notes, seed=1)


def test_insert_puts_the_sentence_at_a_boundary_and_keeps_the_text():
    text = "First line.\nSecond sentence. Third one."
    seen = set()
    for seed in range(40):
        out = canaries.insert(text, "CANARY.", np.random.default_rng(seed))
        assert out.replace("CANARY.", "").split() == text.split()
        seen.add(out.index("CANARY."))
    assert len(seen) >= 3  # start, after a line, after a sentence, end


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    synth.write_synthetic(root, notes=120, seed=4)
    return root / "NOTEEVENTS.csv.gz", root / "note"


def _records(path):
    return {(r["source"], r["note_id"]): r["text"] for f in sorted(path.glob("*.tfrecord"))
            for r in shards.read_examples(f)}


def test_prepare_plants_in_training_notes_only_and_changes_nothing_else(raw, tmp_path):
    options = dict(validation_fraction=0.3, num_shards=2, progress=False)
    plain = prepare.run(*raw, out=tmp_path / "plain", **options)
    planted = prepare.run(*raw, out=tmp_path / "planted", canaries=3, canary_repeats=(1, 8), canary_seed=2,
                          **options)
    kept = sum(v["notes"] for split in planted["kept"].values() for v in split.values())
    assert planted["rows_read"] == kept + sum(planted["dropped"].values()) == plain["rows_read"]
    assert planted["kept"]["validation"] == plain["kept"]["validation"]
    assert "canaries" not in plain and not (tmp_path / "plain" / canaries.FILE).exists()
    assert planted["canaries"]["canaries"] == 3 and planted["canaries"]["insertions"] == 10

    for name in plain["shards"]["validation"]["mimic3"]:  # validation shards: byte for byte
        assert ((tmp_path / "planted" / "validation" / name).read_bytes()
                == (tmp_path / "plain" / "validation" / name).read_bytes())
    listed, _ = canaries.read(tmp_path / "planted")
    hosts = {key: [c for c in listed if key in c.notes] for c in listed for key in c.notes}
    before, after = _records(tmp_path / "plain" / "train"), _records(tmp_path / "planted" / "train")
    assert before.keys() == after.keys()
    for key, text in after.items():
        if key in hosts:
            for canary in hosts[key]:
                assert text.count(canary.sentence) == 1
            assert text != before[key]
        else:
            assert text == before[key]
    assert sum(len(t.encode()) for t in after.values()) == sum(
        v["bytes"] for v in planted["kept"]["train"].values())

    path = tmp_path / "planted" / canaries.FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    manifest_text = (tmp_path / "planted" / "manifest.json").read_text()
    assert all(c.secret not in manifest_text for c in listed)
    assert json.loads(path.read_text())["seed"] == 2


@pytest.mark.slow
def test_hosts_do_not_depend_on_the_number_of_workers(raw, tmp_path):
    options = dict(validation_fraction=0.3, num_shards=2, progress=False, canaries=2, canary_repeats=(5,))
    prepare.run(*raw, out=tmp_path / "one", **options)
    prepare.run(*raw, out=tmp_path / "two", workers=2, **options)
    assert canaries.read(tmp_path / "one") == canaries.read(tmp_path / "two")
    assert _records(tmp_path / "one" / "train") == _records(tmp_path / "two" / "train")


def test_overwrite_without_canaries_removes_the_old_list(raw, tmp_path):
    prepare.run(*raw, out=tmp_path / "out", canaries=1, canary_repeats=(2,), progress=False)
    assert (tmp_path / "out" / canaries.FILE).is_file()
    prepare.run(*raw, out=tmp_path / "out", overwrite=True, progress=False)
    assert not (tmp_path / "out" / canaries.FILE).exists()


def test_cli_flags_and_bad_repeats(raw, tmp_path, capsys):
    assert prepare.main(["--mimic3", str(raw[0]), "--out", str(tmp_path / "out"), "--canaries", "2",
                         "--canary-repeats", "1,3", "--canary-seed", "9", "--no-progress"]) == 0
    listed, space = canaries.read(tmp_path / "out")
    assert [c.repeats for c in listed] == [1, 3] and space == 10**10
    with pytest.raises(SystemExit):
        prepare.main(["--mimic3", str(raw[0]), "--out", str(tmp_path / "x"), "--canary-repeats", "0"])
    assert "Traceback" not in capsys.readouterr().err
