"""Mean ± std over seeds, the Markdown table and the data-efficiency plot."""
import json
import stat

import pytest

from clinical_t5x.eval import results


def run(percent, seed, accuracy):
    return {"task": "mednli", "percent": percent, "seed": seed, "best_step": 100,
            "validation": {"accuracy": accuracy + 1, "macro_f1": 10.0},
            "test": {"accuracy": accuracy, "macro_f1": 20.0}}


RUNS = [run(100, 1, 70.0), run(100, 2, 74.0), run(100, 3, 78.0), run(5, 1, 50.0)]


def test_summary_is_mean_and_sample_std_per_fraction():
    summary = results.summarize(RUNS)
    assert summary[100]["accuracy"] == {"mean": 74.0, "std": pytest.approx(4.0), "seeds": 3}
    assert summary[5]["accuracy"] == {"mean": 50.0, "std": 0.0, "seeds": 1}
    assert results.summarize(RUNS, "validation")[100]["accuracy"]["mean"] == 75.0


def test_markdown_puts_the_primary_metric_first_with_a_column_per_fraction():
    table = results.markdown("mednli", results.summarize(RUNS))
    lines = table.splitlines()
    assert lines[2] == "| metric | 5% labels | 100% labels |"
    assert lines[4] == "| accuracy | 50.00 ± 0.00 | 74.00 ± 4.00 |"
    assert lines[5] == "| macro_f1 | 20.00 ± 0.00 | 20.00 ± 0.00 |"


def test_write_makes_owner_only_json_table_and_png(tmp_path):
    written = results.write(tmp_path, "mednli", RUNS, with_plot=True)
    record = json.loads(written["json"].read_text())
    assert record["test"]["100"]["accuracy"]["mean"] == 74.0 and len(record["runs"]) == 4
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in written.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "one").mkdir()
    assert "png" not in results.write(tmp_path / "one", "mednli", RUNS[:1], with_plot=False)
