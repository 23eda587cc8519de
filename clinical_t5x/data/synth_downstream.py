"""Synthetic MedNLI, RadQA and CLIP files, in exactly the official layouts, with a learnable signal.

The real files are credentialed, so tests, CI and the demo fine-tune on these. Each carries a
rule a model can learn from the text alone, so a fine-tuned model beats the majority-class
baseline only if training and decoding work:
- MedNLI: the premise names two findings; a hypothesis with a negation ("does not have",
  "denies", "no") about one of them is a contradiction, one restating one of them is an
  entailment, one about a finding the premise does not name is neutral.
- RadQA: a short report opens with its finding, "The <organ> shows <finding>." for one
  organ, the finding one of that organ's own; "What does the <organ> show?" (the report's own
  words) is answered by the finding's span, and asked about an organ the report does not
  mention (one question of two) it is impossible (SQuAD 2.0's no-answer). One report in
  twenty has a long history (over 1,024 tokens) after its finding and needs several windows.
- CLIP: sentences holding a label's cue phrase carry that label (two cues, two labels); the
  rest, note-like filler, carry none.
Texts hold MIMIC-III DEID placeholders (`[**...**]`), as the real files do. Output is
owner-only and deterministic by seed.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from clinical_t5x import owner_only
from clinical_t5x.data import downstream, synth

# Examples per split (train, validation, test): MedNLI pairs, RadQA reports, CLIP documents.
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "mednli": (600, 120, 120), "radqa": (1000, 60, 60), "clip": (60, 15, 15),
}
DATASETS = tuple(DEFAULT_SIZES)

_NEGATED = ("Patient does not have {f}.", "Patient denies {f}.", "No {f}.")
_AFFIRMED = ("Patient has {f}.", "Patient was found to have {f}.", "There is {f}.")

# Organ -> the findings a report may give it (each finding belongs to one organ, as in real
# reports): what a question's answer can be is narrowed by its organ, and which one it is, or
# whether there is any, is read from the report. Every finding begins with "a", so an answer
# and the no-answer target part at one word ("a" or "no"), whatever the finding.
_ORGAN_FINDINGS: dict[str, tuple[str, ...]] = {
    "lung": ("a patchy opacity", "a small nodule"),
    "heart": ("a mild enlargement", "a normal silhouette"),
    "pleura": ("a trace effusion", "a diffuse thickening"),
    "mediastinum": ("a normal contour", "a calcified node"),
    "liver": ("a simple cyst", "a fatty infiltration"),
    "kidney": ("a small stone", "a cortical scar"),
    "spine": ("a degenerative change", "a compression fracture"),
    "aorta": ("a mild calcification", "a 4 cm aneurysm"),
    "stomach": ("a postsurgical change", "a wall thickening"),
    "bladder": ("a diverticulum", "a wall trabeculation"),
}
_ORGANS = tuple(_ORGAN_FINDINGS)
_LONG_REPORTS = 0.05  # share of reports with a long history (several 1,024-token windows)
_ORGANS_PER_REPORT = 1  # why one: see `_report`
_QUESTIONS_PER_REPORT = 2  # every described organ, then organs the report does not mention

# CLIP label -> cue clauses that trigger it (plainly synthetic instructions).
_CLIP_CUES: dict[str, tuple[str, ...]] = {
    "Appointment-related followup": ("follow up with Dr. {name} in 2 weeks",
                                     "schedule an appointment with cardiology"),
    "Medication-related followups": ("continue metoprolol and stop aspirin",
                                     "take lasix 20 mg daily until told otherwise"),
    "Lab-related followup": ("check a CBC and chem 7 at your next visit",
                             "recheck INR on Monday"),
    "Case-specific instructions for patient": ("call your doctor if you develop fever",
                                               "avoid heavy lifting for 6 weeks"),
    "Procedure-related followup": ("return for colonoscopy as an outpatient",
                                   "needs an outpatient EGD"),
    "Imaging-related followup": ("repeat chest CT in 3 months",
                                 "obtain a follow-up ultrasound of the liver"),
    "Other helpful contextual information": ("of note the patient lives alone",
                                             "of note the family is aware of the plan"),
}
_CLIP_LABELED_FRACTION = 0.3
_NAME_FAMILY = "[**Last Name (NamePattern1) {n}**]"
_DATE_FAMILY = "[**{y}-{m}-{d}**]"


def _rng(dataset: str, seed: int) -> random.Random:
    return random.Random(f"clinical_t5x.synth_downstream/{dataset}/{seed}")


def _row_ids(rng: random.Random, count: int) -> list[int]:
    return rng.sample(range(1, 2_000_000), count)


# ---- MedNLI -----------------------------------------------------------------------------


def _nli_pair(rng: random.Random, pair_id: str) -> dict:
    first, second, other = rng.sample(synth._FINDINGS, 3)
    premise = (f"Seen by Dr. {synth._fill(_NAME_FAMILY, rng)} on {synth._fill(_DATE_FAMILY, rng)}. "
               f"Pt was noted to have {first} and {second}")
    label = downstream.NLI_LABELS[rng.randrange(3)]
    finding = rng.choice((first, second))
    if label == "contradiction":
        hypothesis = rng.choice(_NEGATED).format(f=finding)
    elif label == "entailment":
        hypothesis = rng.choice(_AFFIRMED).format(f=finding)
    else:
        hypothesis = rng.choice(_AFFIRMED).format(f=other)
    # Real MedNLI carries more keys than the readers use; they must be ignored.
    return {"sentence1": premise, "sentence2": hypothesis, "pairID": pair_id, "gold_label": label,
            "sentence1_parse": "", "sentence2_parse": ""}


def _write_mednli(out: Path, sizes: Sequence[int], seed: int) -> None:
    rng = _rng("mednli", seed)
    for split, count in zip(downstream.SPLITS, sizes):
        with owner_only.open_file(out / downstream.MEDNLI_FILES[split], "w") as f:
            for i in range(count):
                f.write(json.dumps(_nli_pair(rng, f"{split}-{seed}-{i:05d}")) + "\n")


# ---- RadQA ------------------------------------------------------------------------------


def _report(rng: random.Random, writer: synth._Writer) -> tuple[str, dict[str, tuple[int, str]]]:
    """A radiology report and, per organ it describes, the finding's (offset, text).

    The finding comes first, so that it lies in a report's first window whatever the budget;
    most reports are short (a one-sentence history, then the signature), one in twenty carries
    a long history of note sentences after the finding. One organ a report: a tiny model
    trained for minutes learns to copy the span and to tell the asked organ from the reported
    one, where with two to four organs a report it learned neither in runs as short.
    """
    parts = ["FINDINGS: "]
    findings = {}
    for organ in rng.sample(_ORGANS, _ORGANS_PER_REPORT):
        finding = rng.choice(_ORGAN_FINDINGS[organ])
        head = f"The {organ} shows "
        findings[organ] = (sum(map(len, parts)) + len(head), finding)
        parts.append(f"{head}{finding}. ")
    if rng.random() < _LONG_REPORTS:
        history = " ".join(writer.body(rng.randint(40, 60)).split())
    else:
        history = rng.choice(synth._FINDINGS) + "."
    parts.append(f"\nHISTORY: {history}\nDictated by {synth._fill(_NAME_FAMILY, rng)} "
                 f"on {synth._fill(_DATE_FAMILY, rng)}.\n")
    return "".join(parts), findings


def _radqa_article(rng: random.Random, writer: synth._Writer, title: int, prefix: str) -> dict:
    context, findings = _report(rng, writer)
    qas = []
    present = list(findings)
    absent = rng.sample([o for o in _ORGANS if o not in findings], _QUESTIONS_PER_REPORT - len(present))
    asked = present + absent
    rng.shuffle(asked)
    for k, organ in enumerate(asked):
        impossible = organ not in findings
        answers = [] if impossible else [{"text": findings[organ][1], "answer_start": findings[organ][0]}]
        qas.append({"id": f"{prefix}-{title}-{k}", "question": f"What does the {organ} show?",
                    "answers": answers, "is_impossible": impossible})
    return {"title": str(title), "paragraphs": [{"context": context, "qas": qas}]}


def _write_radqa(out: Path, sizes: Sequence[int], seed: int) -> None:
    rng = _rng("radqa", seed)
    writer = synth._Writer("mimic3", seed, stream="radqa")
    titles = iter(_row_ids(rng, sum(sizes)))
    for split, count in zip(downstream.SPLITS, sizes):
        data = [_radqa_article(rng, writer, next(titles), split) for _ in range(count)]
        with owner_only.open_file(out / downstream.RADQA_FILES[split], "w") as f:
            json.dump({"version": "v2.0", "data": data}, f)


# ---- CLIP -------------------------------------------------------------------------------


def _clip_sentence(rng: random.Random, writer: synth._Writer) -> tuple[list[str], list[str]]:
    """(tokens, labels with the `I-` prefix) of one sentence."""
    if rng.random() >= _CLIP_LABELED_FRACTION:
        return rng.choice(writer.pool).split(), []
    labels = rng.sample(list(_CLIP_CUES), 2 if rng.random() < 0.2 else 1)
    clauses = [rng.choice(_CLIP_CUES[label]).format(name=synth._fill(_NAME_FAMILY, rng))
               for label in labels]
    sentence = "Please " + " and ".join(clauses) + "."
    return sentence.split(), [downstream.CLIP_LABEL_PREFIX + label for label in labels]


def _write_clip(out: Path, sizes: Sequence[int], seed: int) -> None:
    rng = _rng("clip", seed)
    writer = synth._Writer("mimic3", seed, stream="clip")
    doc_ids = _row_ids(rng, sum(sizes))
    with owner_only.open_file(out / downstream.CLIP_SENTENCES, "w") as f:
        rows = csv.writer(f, lineterminator="\n")
        rows.writerow(downstream.CLIP_COLUMNS)
        for doc_id in doc_ids:
            for _ in range(rng.randint(8, 30)):
                tokens, labels = _clip_sentence(rng, writer)
                rows.writerow([doc_id, repr(tokens), repr(labels)])
    start = 0
    for split, count in zip(downstream.SPLITS, sizes):
        with owner_only.open_file(out / downstream.CLIP_ID_FILES[split], "w") as f:
            f.writelines(f"{doc_id}\n" for doc_id in doc_ids[start:start + count])
        start += count


_WRITERS: dict[str, Callable[[Path, Sequence[int], int], None]] = {
    "mednli": _write_mednli, "radqa": _write_radqa, "clip": _write_clip,
}


def write_downstream(out_dir: str | os.PathLike, seed: int = 0,
                     sizes: dict[str, Sequence[int]] | None = None) -> dict[str, Path]:
    """Writes `out/mednli/`, `out/radqa/`, `out/clip/`; returns the folders by dataset.

    `sizes` overrides `DEFAULT_SIZES` per dataset: (train, validation, test) counts of MedNLI
    pairs, RadQA reports (four questions each) and CLIP documents (8 to 30 sentences each).
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown datasets in sizes: {sorted(unknown)} (known: {DATASETS})")
    folders = {}
    for name, write in _WRITERS.items():
        counts = tuple(sizes[name])
        if len(counts) != len(downstream.SPLITS) or min(counts) < 1:
            raise ValueError(f"sizes[{name!r}] must be three positive counts (train, validation, test)")
        folder = owner_only.make_dir(Path(out_dir) / name)
        write(folder, counts, seed)
        folders[name] = folder
    return folders
