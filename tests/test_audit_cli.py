"""`clinical-t5x audit` end to end, and the separation it must show: a tiny model trained for many
epochs on a small canaried corpus against the same architecture freshly initialised; then the
command on the demo's model and on a checkpoint written by real t5x.

Thresholds come from one measured run of exactly this fixture (CPU, the seeds in
`audit_models`: ~180 synthetic ECG reports, 400 steps = about 25 epochs over ~125 training
notes), written next to each assertion with the measured figures and a margin; each fails for
one of the two models.

Measured, exposure in bits for the canaries repeated 1 / 4 / 16 / 64 times: trained 7.16 /
13.29 / 13.29 / 13.29 (13.29 = the resolution limit of 10,000 candidates), fresh 0.30 / 5.43 /
0.40 / 0.75. Membership on 51 + 51 notes (canary hosts left out): trained loss AUC 0.638
[0.534, 0.746], likelihood ratio against the fresh model 0.642 [0.536, 0.753], per patient
(39 + 32) loss 0.666 [0.530, 0.784]; fresh loss AUC 0.495 [0.386, 0.607]. With notes of every
category (~100k training tokens, ~4 epochs) the trained model did not separate (loss AUC 0.40):
a tiny model remembers single notes only after many passes over them.

The fixture trains and audits for minutes (1,616 s wall on a loaded 2-core machine, 403 s of
CPU), so these tests are `heavy`.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

import audit_models
from clinical_t5x import cli as top_cli
from clinical_t5x.audit import cli


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    code = top_cli.main(["audit", "--checkpoint", str(tmp_path), "--vocab", str(tmp_path),
                         "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Reports of the trained model (fresh one as reference) and of the fresh model."""
    root = tmp_path_factory.mktemp("audit")
    prepared, vocabulary = audit_models.corpus(root)
    fresh = audit_models.fresh_model(root, vocabulary)
    trained = audit_models.trained_model(root, prepared, vocabulary)
    options = dict(num_notes=200, inputs_length=audit_models.INPUTS_LENGTH, batch_size=512, progress=False)
    return {"trained": cli.run(trained, vocabulary, prepared, root / "trained", reference=fresh, **options),
            "fresh": cli.run(fresh, vocabulary, prepared, root / "fresh_report", **options),
            "root": root}


def _exposure(report, repeats):
    (row,) = [r for r in report["exposure"]["by_repeats"] if r["repeats"] == repeats]
    return row


@pytest.mark.heavy
def test_most_repeated_canaries_are_exposed_only_by_the_trained_model(audited):
    # trained x64, x16 and x4: 13.29 bits measured (resolution limit); fresh x64: 0.75
    for repeats in (64, 16, 4):
        assert _exposure(audited["trained"], repeats)["median_bits"] > 10.0, repeats
    assert _exposure(audited["fresh"], 64)["median_bits"] < 5.0
    # fresh, every canary: at most 5.43 measured (no-learning mean 1.44)
    assert max(c["exposure_bits"] for c in audited["fresh"]["exposure"]["canaries"]) < 8.0


@pytest.mark.heavy
def test_trained_model_membership_is_above_chance(audited):
    # trained: loss 0.638 [0.534, 0.746], likelihood ratio 0.642 [0.536, 0.753]; fresh loss
    # 0.495 [0.386, 0.607] fails both bounds
    attacks = audited["trained"]["membership"]["attacks"]
    for name in ("loss", "likelihood_ratio"):
        assert attacks[name]["auc"] > 0.58 and attacks[name]["auc_ci95"][0] > 0.5, name
    assert audited["trained"]["membership"]["per_patient"]["loss"]["auc"] > 0.58  # measured 0.666


@pytest.mark.heavy
def test_fresh_model_membership_is_near_chance(audited):
    # fresh: measured 0.495 [0.386, 0.607] on 51 + 51 notes; the trained model's 0.638
    # [0.534, 0.746] fails both the band and the interval
    fresh = audited["fresh"]["membership"]["attacks"]["loss"]
    assert abs(fresh["auc"] - 0.5) < 0.1 and fresh["auc_ci95"][0] < 0.5 < fresh["auc_ci95"][1]
    assert "likelihood_ratio" in audited["trained"]["membership"]["attacks"]
    assert "likelihood_ratio" not in audited["fresh"]["membership"]["attacks"]


@pytest.mark.heavy
def test_report_names_notes_by_id_only(audited):
    from clinical_t5x.data import canaries

    root = audited["root"]
    listed, _ = canaries.read(root / "prepared")
    written = "".join(p.read_text() for p in (root / "trained").glob("report.*"))
    assert all(c.secret not in written for c in listed)
    assert json.loads((root / "trained" / "report.json").read_text())["reference"].endswith("checkpoint_0")


def _audit_command(checkpoint, vocabulary, data, out, *options: str) -> dict:
    """`clinical-t5x audit` exactly as docs/audit.md writes it; returns report.json."""
    code = top_cli.main(["audit", "--checkpoint", str(checkpoint), "--vocab", str(vocabulary), "--data", str(data),
                         "--out", str(out), "--no-progress", *options])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def _assert_full_report(out, result: dict, step_dir: str) -> None:
    """Every file of the report, owner-only, for the checkpoint named, with both note samples."""
    from test_owner_only import assert_owner_only

    assert {"report.json", "report.md", "roc.png"} <= {p.name for p in out.iterdir()}
    assert_owner_only(out)
    assert result["checkpoint"].endswith(step_dir)
    attack = result["membership"]["attacks"]["loss"]
    assert attack["members"] == attack["nonmembers"] > 0 and 0.0 <= attack["auc"] <= 1.0
    assert {"16", "32"} <= set(result["extraction"])


@pytest.mark.heavy
def test_audits_the_demos_model(tmp_path):
    """`clinical-t5x demo --out DEMO` then the audit command of docs/audit.md on DEMO's folders
    (the demo at smoke size: its model trains 2 steps with 32-token inputs)."""
    import gin

    from clinical_t5x import demo
    from test_demo import SMALL_MODEL

    out = tmp_path / "demo"
    try:
        done = demo.run(out, notes=1000, vocab_size=500, steps=2, extra_bindings=SMALL_MODEL)
    finally:
        gin.clear_config()
    assert done["train"].exit_code == 0
    result = _audit_command(out / "model", out / "vocab", out / "prepared", out / "audit",
                            "--inputs-length", "32", "--notes", "40")
    _assert_full_report(out / "audit", result, "checkpoint_2")
    assert result["exposure"] is None  # the demo prepares without canaries


@pytest.mark.t5x
@pytest.mark.heavy
@pytest.mark.skipif(importlib.util.find_spec("t5x") is None, reason="t5x is not importable")
def test_audits_a_checkpoint_written_by_t5x(tmp_path):
    """`python -m t5x.train` (gin/clinical_scratch.gin at tiny sizes) on a canaried prepared dir,
    then the audit of its newest Orbax checkpoint, with its step-0 checkpoint as reference."""
    import os
    import sys

    from clinical_t5x.text import vocab
    from test_gin_t5x import TINY, run as run_checked

    prepared, vocabulary = audit_models.corpus(tmp_path, canaries=1)
    model_dir = tmp_path / "model"
    bindings = {**TINY, "MIXTURE_OR_TASK_NAME": f"'{audit_models.TASK}'", "VOCABULARY": f"'{vocabulary}'",
                "network.T5Config.vocab_size": str(vocab.load(vocabulary).model_vocab_size),
                "MODEL_DIR": f"'{model_dir}'"}
    xla_flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env = {**os.environ, "CLINICAL_T5X_DATA_DIR": str(prepared), "CLINICAL_T5X_NO_REEXEC": "1",
           "XLA_FLAGS": xla_flags.strip()}
    run_checked([sys.executable, "-m", "t5x.train", "--gin_file=gin/clinical_scratch.gin",
                 *(f"--gin.{k}={v}" for k, v in bindings.items())], env, timeout=1800)  # 10 min on a busy CPU
    result = _audit_command(model_dir, vocabulary, prepared, tmp_path / "audit", "--reference",
                            str(model_dir / "checkpoint_0"), "--inputs-length", "64", "--notes", "40")
    _assert_full_report(tmp_path / "audit", result, "checkpoint_3")
    assert result["reference"].endswith("checkpoint_0")
    assert "likelihood_ratio" in result["membership"]["attacks"]
    assert [c["repeats"] for c in result["exposure"]["canaries"]] == [1]  # the one canary planted
