"""Building vocabulary folders: training conventions, determinism, sources, the CLI, permissions."""
import json
import os
import stat

import pytest
from transformers import AutoTokenizer

from clinical_t5x.data import deid, shards, synth

from clinical_t5x.text import tokenizer, vocab, vocab_build


def _notes(n=400, seed=3):
    return deid.replace_list_of_notes(synth.synthetic_notes(n, seed))


def _write_prepared(root, notes, num_shards):
    """Notes as prepared training shards (the `shards` layout), round-robin over the shards."""
    (root / "train").mkdir(parents=True)
    writers = [shards.ShardWriter(root / "train" / shards.shard_name("mimic3", k, num_shards))
               for k in range(num_shards)]
    encode = shards.ExampleEncoder()
    for row, text in enumerate(notes):
        writers[row % num_shards].write(encode(text.encode(), str(row).encode(), row, b"mimic3", b"Nursing"))
    for writer in writers:
        writer.close()
    manifest = {"format": shards.FORMAT,
                "kept": {"train": {"mimic3": {"notes": len(notes), "bytes": 0}}},
                "shards": {"train": {"mimic3": [w.path.name for w in writers]}}}
    (root / shards.MANIFEST).write_text(json.dumps(manifest))
    return root


def test_train_spiece_conventions_and_determinism(tmp_path):
    notes = _notes()
    first = vocab_build.train_spiece(notes, tmp_path / "a", vocab_size=400, lowercase=False, seed=1)
    again = vocab_build.train_spiece(notes, tmp_path / "b", vocab_size=400, lowercase=False, seed=1)
    assert first.read_bytes() == again.read_bytes()
    proto = tokenizer.read_spiece(first)
    spec = proto.trainer_spec
    assert (spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id, spec.model_type) == (0, 1, 2, -1, 1)
    assert [p.piece for p in proto.pieces[:3]] == ["<pad>", "</s>", "<unk>"] and len(proto.pieces) == 400
    pieces = [p.piece for p in proto.pieces]
    assert not [p for p in pieces if any(tag in p or p.endswith(tag[-3:]) for tag in deid.TAGS)]
    assert not [p for p in pieces[3:] if "▁" in p[1:]]  # HF splits on whitespace: no inner ▁
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


def test_training_lines_drop_tags_and_blank_lines():
    lines = list(vocab_build.training_lines(["Seen by [Name] on [DAY].\n\n  \n[Age] y/o", "[LOC]"]))
    assert lines == ["Seen by   on  .", "  y/o"]


def test_lowercase_model_folds_case(tmp_path):
    path = vocab_build.train_spiece(_notes(), tmp_path, vocab_size=300, lowercase=True, seed=0)
    proto = tokenizer.read_spiece(path)
    assert tokenizer.folds_case(proto) and proto.normalizer_spec.name == "nmt_nfkc_cf"
    assert not [p.piece for p in proto.pieces[3:] if p.piece != p.piece.lower()]


def test_prepared_cli_builds_a_private_self_describing_folder(tmp_path, capsys):
    prepared = _write_prepared(tmp_path / "prepared", _notes(500), num_shards=3)
    out = tmp_path / "vocab"
    assert vocab_build.main(["--prepared", str(prepared), "--out", str(out), "--vocab-size", "350",
                             "--sample-notes", "300", "--seed", "5", "--lowercase"]) == 0
    assert json.loads(capsys.readouterr().out)["num_pieces"] == 350
    config = json.loads((out / vocab.CONFIG_NAME).read_text())
    assert config["source"] == "mimic" and config["lowercase"] is True
    assert config["training"] == {"vocab_size": 350, "sample_notes": 300, "notes_used": 300, "seed": 5}
    assert config["tag_ids"] == {tag: 350 + 100 + k for k, tag in enumerate(deid.TAGS)}
    assert config["model_vocab_size"] == 512
    v = vocab.load(out)
    assert v.lowercase and v.vocab_size == 350 + 100 + len(deid.TAGS)
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("[MISC]") == v.tag_ids["[MISC]"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o600}


def test_cli_reports_errors_cleanly(tmp_path, capsys):
    prepared = _write_prepared(tmp_path / "prepared", _notes(50), num_shards=1)
    args = ["--prepared", str(prepared), "--out", str(tmp_path / "v"), "--vocab-size", "50000"]
    assert vocab_build.main(args) == 1
    assert "50000 pieces failed" in capsys.readouterr().err
    assert vocab_build.main(["--prepared", str(tmp_path / "nothing"), "--out", str(tmp_path / "v")]) == 1
    assert "manifest.json not found" in capsys.readouterr().err


def test_sample_is_deterministic_and_independent_of_sharding(tmp_path):
    notes = [f"note number {i}" for i in range(200)]
    one = _write_prepared(tmp_path / "one", notes, num_shards=1)
    four = _write_prepared(tmp_path / "four", notes, num_shards=4)
    sample = vocab_build.sample_prepared_notes(one, 50, seed=3)
    assert len(set(sample)) == 50
    assert sample == vocab_build.sample_prepared_notes(four, 50, seed=3)
    assert sample != vocab_build.sample_prepared_notes(one, 50, seed=4)
    assert sorted(vocab_build.sample_prepared_notes(one, 500, seed=3)) == sorted(notes)
    # A shard the manifest does not list (left by an earlier run) is never read.
    stale = shards.ShardWriter(one / "train" / shards.shard_name("mimic3", 0, 9))
    stale.write(shards.ExampleEncoder()(b"stale note", b"999", 999, b"mimic3", b"Nursing"))
    stale.close()
    assert sorted(vocab_build.sample_prepared_notes(one, 500, seed=3)) == sorted(notes)
    with pytest.raises(FileNotFoundError, match="missing.*manifest.json not found"):
        vocab_build.sample_prepared_notes(tmp_path / "missing", 5, seed=0)


def test_from_hf_cli(tmp_path):
    """A Hugging Face T5-style folder (here: one we save ourselves) becomes a vocabulary folder."""
    source = vocab_build.build_synthetic_vocab(tmp_path / "synthetic", vocab_size=500)
    hf_dir = tmp_path / "t5-like"
    tokenizer.build_hf_tokenizer(source).save_pretrained(hf_dir)
    (hf_dir / "spiece.model").write_bytes((source / "spiece.model").read_bytes())
    out = tmp_path / "vocab"
    assert vocab_build.main(["--from-hf", str(hf_dir), "--out", str(out)]) == 0
    v = vocab.load(out)
    assert v.source == "huggingface" and v.config["origin"] == "t5-like" and not v.lowercase
    assert v == vocab.load(source)
    os.remove(hf_dir / "spiece.model")  # tokenizer.json alone: its own ids, tokenizers-backed
    only_json = vocab.load(vocab_build.from_hf(hf_dir, tmp_path / "json"))
    assert only_json.config["backend"] == "tokenizers" and only_json.tag_ids == v.tag_ids
    os.remove(hf_dir / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor spiece.model"):
        vocab_build.from_hf(hf_dir, tmp_path / "other")
    with pytest.raises(SystemExit):
        vocab_build.main(["--from-hf", str(hf_dir), "--out", str(out), "--lowercase"])


def test_build_synthetic_vocab(tmp_path):
    v = vocab.load(vocab_build.build_synthetic_vocab(tmp_path, vocab_size=300, seed=1))
    assert v.source == "synthetic" and v.num_pieces <= 300
    assert v.encode("[Name]") == [v.tag_ids["[Name]"]]


def test_rewriting_a_looser_file_makes_it_owner_only_before_writing(tmp_path):
    path = tmp_path / vocab.SPIECE_NAME
    path.write_bytes(b"old")
    path.chmod(0o644)
    vocab_build._write_private(path, "new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
