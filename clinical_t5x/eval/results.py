"""Fine-tuning results: per-run records, mean ± std over seeds, the Markdown table, the plot.

A run record is `{"task", "percent", "seed", "best_step", "validation": {metric: value},
"test": {metric: value}}`. Summaries group runs by label percentage; the standard deviation is
the sample one over seeds (0 for a single seed), as papers report seed spread.
"""
from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clinical_t5x import owner_only

# The metric that chooses the best checkpoint on validation and heads each table.
PRIMARY = {"mednli": "accuracy", "radqa": "f1", "clip": "macro_f1"}


def summarize(runs: Sequence[dict[str, Any]], split: str = "test") -> dict[int, dict[str, dict]]:
    """{percent: {metric: {"mean", "std", "seeds"}}} over the runs' `split` metrics."""
    grouped: dict[int, list[dict[str, float]]] = {}
    for run in runs:
        grouped.setdefault(int(run["percent"]), []).append(run[split])
    summary = {}
    for percent in sorted(grouped):
        metrics = grouped[percent]
        names = [name for name in metrics[0] if all(name in m for m in metrics)]
        summary[percent] = {
            name: {"mean": statistics.fmean(m[name] for m in metrics),
                   "std": statistics.stdev(m[name] for m in metrics) if len(metrics) > 1 else 0.0,
                   "seeds": len(metrics)}
            for name in names}
    return summary


def _ordered_metrics(task: str, summary: dict[int, dict[str, dict]]) -> list[str]:
    names = list(dict.fromkeys(name for per in summary.values() for name in per))
    primary = PRIMARY.get(task)
    return sorted(names, key=lambda n: (n != primary, "/" in n, names.index(n)))


def markdown(task: str, summary: dict[int, dict[str, dict]]) -> str:
    """A table: one row per test metric, one column per label percentage, `mean ± std`."""
    percents = sorted(summary)
    seeds = {per[next(iter(per))]["seeds"] for per in summary.values() if per}
    lines = [f"# {task}: test metrics (mean ± std over {', '.join(map(str, sorted(seeds)))} "
             "seed(s); checkpoint chosen on validation)", "",
             "| metric | " + " | ".join(f"{p}% labels" for p in percents) + " |",
             "|---|" + "---|" * len(percents)]
    for name in _ordered_metrics(task, summary):
        cells = [f"{summary[p][name]['mean']:.2f} ± {summary[p][name]['std']:.2f}"
                 if name in summary[p] else "" for p in percents]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(task: str, summary: dict[int, dict[str, dict]], path: str | os.PathLike) -> Path:
    """The data-efficiency curve: the primary test metric against the label percentage."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    metric = PRIMARY[task]
    percents = sorted(p for p in summary if metric in summary[p])
    means = [summary[p][metric]["mean"] for p in percents]
    stds = [summary[p][metric]["std"] for p in percents]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.errorbar(percents, means, yerr=stds, marker="o", capsize=3)
    axes.set_xscale("log")
    axes.set_xticks(percents, [f"{p}%" for p in percents])
    axes.set_xlabel("training labels used")
    axes.set_ylabel(f"test {metric}")
    axes.set_title(f"{task}: data efficiency")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    with owner_only.open_file(path, "wb") as handle:
        figure.savefig(handle, dpi=120, format="png")
    plt.close(figure)
    return path


def write(out: str | os.PathLike, task: str, runs: Sequence[dict[str, Any]],
          with_plot: bool) -> dict[str, Path]:
    """`results.json` (runs + summaries), `results.md` and, when asked, `data_efficiency.png`."""
    out = Path(out)
    summary = summarize(runs)
    record = {"task": task, "runs": list(runs), "test": summary,
              "validation": summarize(runs, "validation")}
    written = {"json": out / "results.json", "md": out / "results.md"}
    with owner_only.open_file(written["json"], "w") as handle:
        handle.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    with owner_only.open_file(written["md"], "w") as handle:
        handle.write(markdown(task, summary))
    if with_plot:
        written["png"] = plot(task, summary, out / "data_efficiency.png")
    return written
