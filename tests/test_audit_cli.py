"""`clinical-t5x audit` end to end, and the separation it must show: a tiny model trained for many
epochs on a small canaried corpus against the same architecture freshly initialised.

The thresholds come from measured runs (CPU, seeds as below), written next to each with the
figures and a margin; a threshold that both models pass would test nothing.
"""

from __future__ import annotations

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


@pytest.mark.slow
def test_most_repeated_canaries_are_exposed_only_by_the_trained_model(audited):
    assert _exposure(audited["trained"], 64)["median_bits"] > 10.0
    assert _exposure(audited["fresh"], 64)["median_bits"] < 5.0
    fresh_all = [c["exposure_bits"] for c in audited["fresh"]["exposure"]["canaries"]]
    assert max(fresh_all) < 7.0


@pytest.mark.slow
def test_membership_separates_only_for_the_trained_model(audited):
    trained = audited["trained"]["membership"]["attacks"]
    fresh = audited["fresh"]["membership"]["attacks"]
    assert trained["loss"]["auc"] > 0.75 and trained["likelihood_ratio"]["auc"] > 0.75
    assert abs(fresh["loss"]["auc"] - 0.5) < 0.15
    assert "likelihood_ratio" not in fresh


@pytest.mark.slow
def test_report_names_notes_by_id_only(audited):
    from clinical_t5x.data import canaries

    root = audited["root"]
    listed, _ = canaries.read(root / "prepared")
    written = "".join(p.read_text() for p in (root / "trained").glob("report.*"))
    assert all(c.secret not in written for c in listed)
    assert json.loads((root / "trained" / "report.json").read_text())["reference"].endswith("checkpoint_0")
