"""The report folder: every file owner-only, the numbers and how to read them, no secret."""

import json
import stat

import numpy as np

from clinical_t5x.audit import exposure, report

SECRET = "4827 1936 05"


def _section(with_exposure=True):
    results = [exposure.estimate(i, r, s, np.arange(10_000.0), 10**10)
               for i, (r, s) in enumerate([(1, 10.0), (64, 20_000.0)])]
    attack = {"members": 50, "nonmembers": 50, "auc": 0.71, "auc_ci95": [0.6, 0.8],
              "tpr_at_0.01_fpr": 0.1, "tpr_at_0.001_fpr": 0.0}
    return {"checkpoint": "/m/checkpoint_9", "reference": None, "data": "/d", "format": "x",
            "settings": {"notes": 100},
            "exposure": {"space_size": 10**10, "log2_space_size": 33.219, "candidates": 10_000,
                         "resolution_limit_bits": 13.288, "no_learning_bits": {"mean": 1.443, "median": 1.0},
                         "by_repeats": exposure.summary_by_repeats(results),
                         "canaries": [r.as_dict() for r in results]} if with_exposure else None,
            "membership": {"notes": {"members": 50, "nonmembers": 50}, "attacks": {"loss": attack},
                           "per_patient": {"loss": attack}},
            "extraction": {"16": {"train_notes": 5, "validation_notes": 5, "train_exact_match": 0.2,
                                  "validation_exact_match": 0.0, "difference": 0.2}}}


def test_report_files_are_owner_only_and_hold_the_figures(tmp_path):
    section = _section()
    curves = {"loss": (np.array([0, 0.5, 1.0]), np.array([0, 0.8, 1.0]))}
    out = report.write(tmp_path / "r", section, curves)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([report.REPORT_JSON, report.REPORT_MD, report.ROC_PNG, report.EXPOSURE_PNG])
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    assert json.loads((out / report.REPORT_JSON).read_text()) == section
    markdown = (out / report.REPORT_MD).read_text()
    assert "0.71 [0.6, 0.8]" in markdown and "How to read" in markdown and "0.90" in markdown
    assert "| 64 | 1 |" in markdown and "bound what they find" in markdown
    assert (out / report.ROC_PNG).read_bytes()[:4] == b"\x89PNG"
    assert SECRET not in markdown + (out / report.REPORT_JSON).read_text()


def test_report_without_canaries_says_so(tmp_path):
    out = report.write(tmp_path / "r", _section(False), {"loss": (np.array([0, 1.0]), np.array([0, 1.0]))})
    assert "prepared without `--canaries`" in (out / report.REPORT_MD).read_text()
    assert not (out / report.EXPOSURE_PNG).exists()
    assert "exposure" not in report.summary(_section(False))
