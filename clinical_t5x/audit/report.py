"""The audit's report: `report.json` (every figure), `report.md` (the figures with one line each on
how to read them, and the published anchors) and two plots, all owner-only.

Only figures, ids and paths go in: the sections built by `clinical_t5x.audit.cli` hold no note
text and no secret, and nothing here adds any.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from clinical_t5x import owner_only

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ROC_PNG = "roc.png"
EXPOSURE_PNG = "exposure.png"

ANCHORS = (
    "Masked LMs trained on clinical notes: loss attack AUC 0.66, likelihood-ratio attack AUC 0.90 "
    "(Mireshghallah et al. 2022).",
    "Clinical BERT and GPT-2: up to 7% membership leakage (Jagannatha et al. 2021).",
    "Clinical BERT: name-condition probes near chance (Lehman et al. 2021).",
    "Secret Sharer canaries: exposure near log2|R| means the secret is extractable; a model that "
    "learned nothing gives about 1 bit (Carlini et al. 2019).",
)


def write(out: str | os.PathLike, section: dict, curves: dict) -> Path:
    """Writes the report folder; returns it."""
    out = owner_only.make_dir(out)
    with owner_only.open_file(out / REPORT_JSON, "w") as f:
        f.write(json.dumps(section, indent=2) + "\n")
    with owner_only.open_file(out / REPORT_MD, "w") as f:
        f.write(markdown(section))
    _roc_plot(out / ROC_PNG, curves, section["membership"]["attacks"])
    if section["exposure"] is not None:
        _exposure_plot(out / EXPOSURE_PNG, section["exposure"])
    return out


def _exposure_lines(exposure: dict | None) -> list[str]:
    if exposure is None:
        return ["No canaries: the data was prepared without `--canaries`, so exposure was not measured.", ""]
    lines = [f"Secrets from a space of 2^{exposure['log2_space_size']} values, rank estimated from "
             f"{exposure['candidates']} sampled candidates (resolution limit "
             f"{exposure['resolution_limit_bits']} bits). A model that learned nothing: "
             f"{exposure['no_learning_bits']['mean']} bits on average, median "
             f"{exposure['no_learning_bits']['median']}.", "",
             "| repeats | canaries | median exposure (bits) | max (bits) | at resolution limit |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['repeats']} | {r['canaries']} | {r['median_bits']} | {r['max_bits']} | "
              f"{r['at_resolution_limit']} |" for r in exposure["by_repeats"]]
    lines += ["", "How to read: exposure is how many bits of the secret the model gives away; near the "
              "no-learning value the canary is not memorised, at the resolution limit it ranks above every "
              "sampled candidate and is likely extractable by guessing. Growth with repeats is the "
              "memorisation of text that occurs several times (copied notes, templated phrases).", ""]
    return lines


def _attack_table(title: str, attacks: dict) -> list[str]:
    lines = [f"**{title}**", "", "| attack | members / non-members | ROC-AUC [95% CI] | TPR @ 1% FPR | TPR @ 0.1% FPR |",
             "|---|---|---|---|---|"]
    for name, a in attacks.items():
        lines.append(f"| {name} | {a['members']} / {a['nonmembers']} | {a['auc']} [{a['auc_ci95'][0]}, "
                     f"{a['auc_ci95'][1]}] | {a['tpr_at_0.01_fpr']} | {a['tpr_at_0.001_fpr']} |")
    return lines + [""]


def markdown(section: dict) -> str:
    """report.md: numbers, how to read each, anchors."""
    member = section["membership"]
    lines = ["# Privacy audit", "", f"Checkpoint: `{section['checkpoint']}`  ",
             f"Reference: `{section['reference']}`  " if section["reference"] else "Reference: none  ",
             f"Data: `{section['data']}`; settings: `{json.dumps(section['settings'])}`", "",
             "## Canary exposure", "", *_exposure_lines(section["exposure"]),
             "## Membership inference", "",
             *_attack_table("Per note", member["attacks"]),
             *_attack_table("Per patient (mean of the patient's note scores)", member["per_patient"]),
             "How to read: ROC-AUC is the chance that a training note scores above a validation note "
             "(0.5: the attack learns nothing about membership; 1: it always tells). The interval is a "
             "bootstrap over both samples. TPR at low FPR is the share of training notes caught when "
             "almost no held-out note is falsely accused; with n non-members, FPRs below 1/n cannot be "
             "resolved and read as 0.", "",
             "## Extraction", "",
             "| masked tokens | training notes: exact match | validation notes: exact match | difference |",
             "|---|---|---|---|"]
    for k, e in section["extraction"].items():
        lines.append(f"| {k} | {e['train_exact_match']} (n={e['train_notes']}) | {e['validation_exact_match']} "
                     f"(n={e['validation_notes']}) | {e['difference']} |")
    lines += ["", "How to read: the share of notes whose masked stretch the model writes out exactly by "
              "greedy decoding. The difference is memorisation beyond what it can infer from context.", "",
              "## Limits", "", "These attacks bound what they find, not all leakage: a stronger attack, "
              "other prompts or more samples may extract more. Figures on synthetic notes say nothing "
              "about a model trained on real notes.", "", "## Anchors", ""]
    lines += [f"- {anchor}" for anchor in ANCHORS]
    return "\n".join(lines) + "\n"


def _figure():
    import matplotlib  # noqa: PLC0415 - plotting only when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(plt, fig, path: Path) -> None:
    with owner_only.open_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _roc_plot(path: Path, curves: dict, attacks: dict) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {attacks[name]['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", label="chance")
    ax.set(xlabel="false-positive rate (validation notes)", ylabel="true-positive rate (training notes)",
           title="Membership inference, per note")
    ax.legend(loc="lower right")
    _save(plt, fig, path)


def _exposure_plot(path: Path, exposure: dict) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 4))
    repeats = np.array([c["repeats"] for c in exposure["canaries"]])
    values = np.array([c["exposure_bits"] for c in exposure["canaries"]])
    ax.scatter(repeats, values, alpha=0.6, label="canary")
    rows = exposure["by_repeats"]
    ax.plot([r["repeats"] for r in rows], [r["median_bits"] for r in rows], "o-", label="median")
    ax.axhline(exposure["no_learning_bits"]["mean"], color="gray", ls=":", label="no learning")
    ax.axhline(exposure["resolution_limit_bits"], color="red", ls="--", label="resolution limit")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="repeats in training notes", ylabel="exposure (bits)", title="Canary exposure")
    ax.legend(loc="upper left")
    _save(plt, fig, path)


def summary(section: dict) -> str:
    """A few lines for the terminal."""
    lines = []
    if section["exposure"] is not None:
        lines += [f"exposure x{r['repeats']}: median {r['median_bits']} bits, max {r['max_bits']}"
                  for r in section["exposure"]["by_repeats"]]
    lines += [f"membership {name}: AUC {a['auc']} [{a['auc_ci95'][0]}, {a['auc_ci95'][1]}]"
              for name, a in section["membership"]["attacks"].items()]
    lines += [f"extraction k={k}: train {e['train_exact_match']}, validation {e['validation_exact_match']}"
              for k, e in section["extraction"].items()]
    return "\n".join(lines)
