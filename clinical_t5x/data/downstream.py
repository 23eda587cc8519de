"""Strict readers of the three downstream benchmarks' official files (MedNLI, RadQA, CLIP).

The files are credentialed, so users place them in a folder and these readers take them as
published, refusing anything else with a `DownstreamDataError` that names the file, the record
(line number and/or id) and the field, and never quotes the text of a note, premise, question
or answer (a bad value is described, not shown). Layouts:

- MedNLI: `mli_{train,dev,test}_v1.jsonl`, one JSON object a line with `sentence1`,
  `sentence2`, `gold_label` (entailment, contradiction, neutral) and `pairID`; other keys ignored.
- RadQA: `{train,dev,test}.json` in SQuAD 2.0 JSON: `data[].title` (the MIMIC-III note
  ROW_ID), `data[].paragraphs[].context`, `.qas[]` with `id`, `question`, `answers[]`
  (`text`, `answer_start`) and `is_impossible`.
- CLIP: `sentence_level.csv` with columns `doc_id` (the MIMIC-III ROW_ID of the discharge
  summary), `sentence` (a Python-literal list of tokens) and `labels` (a Python-literal list of
  `I-`-prefixed label names), plus `{train,val,test}_ids.csv` (one doc id a line, no header).
  Literals are parsed with `ast.literal_eval`, which evaluates nothing.

Files must be UTF-8. Split names are the pretraining ones: `train`, `validation`, `test`.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import io
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
MEDNLI_FILES = {"train": "mli_train_v1.jsonl", "validation": "mli_dev_v1.jsonl",
                "test": "mli_test_v1.jsonl"}
RADQA_FILES = {"train": "train.json", "validation": "dev.json", "test": "test.json"}
CLIP_SENTENCES = "sentence_level.csv"
CLIP_ID_FILES = {"train": "train_ids.csv", "validation": "val_ids.csv", "test": "test_ids.csv"}
CLIP_COLUMNS = ("doc_id", "sentence", "labels")

NLI_LABELS = ("entailment", "contradiction", "neutral")
CLIP_LABEL_PREFIX = "I-"
CLIP_LABELS = (
    "Appointment-related followup", "Medication-related followups",
    "Other helpful contextual information", "Lab-related followup",
    "Case-specific instructions for patient", "Procedure-related followup",
    "Imaging-related followup",
)
# Ids are shown in errors only when they look like ids (no spaces, short): never text.
_ID_SHAPE = re.compile(r"[A-Za-z0-9_.:#-]{1,64}")
_ROW_ID = re.compile(r"\s*\d{1,19}\s*")


class DownstreamDataError(ValueError):
    """A downstream file that is not in its official layout. The message is one line naming
    the file, the record and the field; the CLI prints it without a traceback."""

    def __init__(self, path: str | os.PathLike, record: str, field: str | None, problem: str):
        where = f"{path}: {record}" if record else str(path)
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {problem}")
        self.path, self.record, self.field = str(path), record, field


@dataclasses.dataclass(frozen=True)
class NliPair:
    """One MedNLI pair."""

    pair_id: str
    premise: str
    hypothesis: str
    label: str


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset in the context


@dataclasses.dataclass(frozen=True)
class Question:
    """One RadQA question with its report; `title` is the report's MIMIC-III ROW_ID."""

    qa_id: str
    title: str
    context: str
    question: str
    answers: tuple[Answer, ...]
    is_impossible: bool


@dataclasses.dataclass(frozen=True)
class ClipSentence:
    """One CLIP sentence: `index` is its position in its document (0-based, file order)."""

    doc_id: int
    index: int
    tokens: tuple[str, ...]
    labels: tuple[str, ...]  # label names without the `I-` prefix, sorted

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclasses.dataclass(frozen=True)
class ClipDocument:
    doc_id: int
    sentences: tuple[ClipSentence, ...]


def shown_id(value: Any) -> str:
    """An id as errors may print it: itself when id-shaped, else a placeholder (it could be text)."""
    text = str(value)
    return repr(text) if _ID_SHAPE.fullmatch(text) else "(unprintable id)"


def _read_text(folder: str | os.PathLike, name: str) -> tuple[Path, str]:
    """A benchmark file's path and text, which must exist and be UTF-8 (a bad byte is reported
    by its line, never shown)."""
    path = Path(folder) / name
    if not path.is_file():
        raise DownstreamDataError(path, "", None, "missing (see docs/downstream.md for the layout)")
    data = path.read_bytes()
    try:
        return path, data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DownstreamDataError(path, f"line {line}", None, "not valid UTF-8") from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {SPLITS}")


def _present(record: Any, key: str, path: Path, where: str) -> Any:
    """`record[key]`; the record must be a JSON object holding `key`."""
    if not isinstance(record, dict):
        raise DownstreamDataError(path, where, None, "is not a JSON object")
    if key not in record:
        raise DownstreamDataError(path, where, key, "missing")
    return record[key]


def _field(record: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """`record[key]`, which must exist and be of `kind` (a non-empty string for str)."""
    value = _present(record, key, path, where)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise DownstreamDataError(path, where, key, f"must be {kind.__name__}, "
                                  f"got {type(value).__name__}")
    if kind is str and not value.strip():
        raise DownstreamDataError(path, where, key, "is empty")
    return value


# ---- MedNLI -----------------------------------------------------------------------------


def _new_id(record: Any, key: str, seen: set[str], path: Path, where: str) -> tuple[str, str]:
    """The record's id under `key`, refused if `seen` already holds it (then added), and
    `where` extended to name it, so later errors point at the record by id."""
    value = _field(record, key, str, path, where)
    where = f"{where} ({key} {shown_id(value)})"
    if value in seen:
        raise DownstreamDataError(path, where, key, "duplicate id")
    seen.add(value)
    return value, where


def read_mednli(folder: str | os.PathLike, split: str) -> list[NliPair]:
    """The pairs of one split, in file order; blank lines are skipped."""
    _check_split(split)
    path, text = _read_text(folder, MEDNLI_FILES[split])
    pairs, seen = [], set()
    for number, line in enumerate(text.split("\n"), 1):  # JSON strings may hold U+2028
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DownstreamDataError(path, where, None,
                                      f"not valid JSON ({e.msg} at column {e.colno})") from None
        pair_id, where = _new_id(record, "pairID", seen, path, where)
        label = _field(record, "gold_label", str, path, where)
        if label not in NLI_LABELS:
            raise DownstreamDataError(path, where, "gold_label", f"not one of {', '.join(NLI_LABELS)}")
        pairs.append(NliPair(pair_id, _field(record, "sentence1", str, path, where),
                             _field(record, "sentence2", str, path, where), label))
    return pairs


# ---- RadQA ------------------------------------------------------------------------------


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:  # the message names a position, never the text
        raise DownstreamDataError(path, f"line {e.lineno}", None,
                                  f"not valid JSON ({e.msg} at column {e.colno}; truncated file?)") from None


def _list_field(record: Any, key: str, path: Path, where: str) -> list:
    return _field(record, key, list, path, where)


def _answers(qa: dict, context: str, impossible: bool, path: Path, where: str) -> tuple[Answer, ...]:
    answers = []
    for k, answer in enumerate(_list_field(qa, "answers", path, where)):
        at = f"{where} answers[{k}]"
        text = _field(answer, "text", str, path, at)
        start = _field(answer, "answer_start", int, path, at)
        if context[start:start + len(text)] != text:
            raise DownstreamDataError(path, at, "answer_start", "the answer text is not at this "
                                      "offset of the context")
        answers.append(Answer(text, start))
    if impossible and answers:
        raise DownstreamDataError(path, where, "answers", "must be empty when is_impossible is true")
    if not impossible and not answers:
        raise DownstreamDataError(path, where, "answers", "empty, but is_impossible is false")
    return tuple(answers)


def _title(article: Any, path: Path, where: str) -> str:
    """A report's title, the note ROW_ID: a whole number (JSON string or number)."""
    title = _present(article, "title", path, where)
    if isinstance(title, bool) or not isinstance(title, (str, int)) or not _ROW_ID.fullmatch(str(title)):
        raise DownstreamDataError(path, where, "title", "must be a MIMIC-III note ROW_ID (a whole number)")
    return str(title).strip()


def _iter_radqa(path: Path, text: str) -> Iterator[Question]:
    root = _load_json(path, text)
    seen: set[str] = set()
    for i, article in enumerate(_list_field(root, "data", path, "top level")):
        title = _title(article, path, f"data[{i}]")
        where = f"data[{i}] (title {title})"
        for j, paragraph in enumerate(_list_field(article, "paragraphs", path, where)):
            at = f"{where} paragraphs[{j}]"
            context = _field(paragraph, "context", str, path, at)
            for k, qa in enumerate(_list_field(paragraph, "qas", path, at)):
                qa_id, qa_where = _new_id(qa, "id", seen, path, f"{at} qas[{k}]")
                question = _field(qa, "question", str, path, qa_where)
                impossible = _field(qa, "is_impossible", bool, path, qa_where)
                yield Question(qa_id, title, context, question,
                               _answers(qa, context, impossible, path, qa_where), impossible)


def read_radqa(folder: str | os.PathLike, split: str) -> list[Question]:
    """The questions of one split, in file order."""
    _check_split(split)
    return list(_iter_radqa(*_read_text(folder, RADQA_FILES[split])))


# ---- CLIP -------------------------------------------------------------------------------


def _literal_list(value: str, path: Path, where: str, field: str) -> list[str]:
    """A Python-literal list of strings, parsed without evaluating anything."""
    try:
        parsed = ast.literal_eval(value)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        parsed = None  # the parser's message can quote the literal: not shown
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise DownstreamDataError(path, where, field, "not a Python-literal list of strings "
                                  "(unbalanced brackets or quotes?)")
    return parsed


def _clip_labels(value: str, path: Path, where: str) -> tuple[str, ...]:
    names = []
    for label in _literal_list(value, path, where, "labels"):
        name = label[len(CLIP_LABEL_PREFIX):] if label.startswith(CLIP_LABEL_PREFIX) else None
        if name not in CLIP_LABELS:
            raise DownstreamDataError(path, where, "labels", f"every label must be {CLIP_LABEL_PREFIX!r} "
                                      f"+ one of the {len(CLIP_LABELS)} CLIP label names")
        names.append(name)
    return tuple(sorted(set(names)))


def _row_id(value: str, path: Path, where: str, field: str | None) -> int:
    if not _ROW_ID.fullmatch(value):
        raise DownstreamDataError(path, where, field, "must be a MIMIC-III note ROW_ID (a whole number)")
    return int(value)


def _read_clip_sentences(folder: str | os.PathLike) -> dict[int, list[ClipSentence]]:
    """Every sentence of `sentence_level.csv`, grouped by document, file order kept."""
    path, text = _read_text(folder, CLIP_SENTENCES)
    documents: dict[int, list[ClipSentence]] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CLIP_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DownstreamDataError(path, "header", missing[0], "missing column")
    for row in _csv_rows(reader, path):
        where = f"line {reader.line_num}"
        if None in row.values():
            raise DownstreamDataError(path, where, None, f"fewer fields than the header's "
                                      f"{len(reader.fieldnames)}")
        doc_id = _row_id(row["doc_id"], path, where, "doc_id")
        sentences = documents.setdefault(doc_id, [])
        where = f"line {reader.line_num} (doc_id {doc_id}, sentence {len(sentences)})"
        tokens = _literal_list(row["sentence"], path, where, "sentence")
        sentences.append(ClipSentence(doc_id, len(sentences), tuple(tokens),
                                      _clip_labels(row["labels"], path, where)))
    return documents


def _csv_rows(reader: csv.DictReader, path: Path) -> Iterator[dict]:
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DownstreamDataError(path, f"line {reader.line_num}", None, f"CSV syntax error ({e})") from None


def read_clip_ids(folder: str | os.PathLike, split: str) -> list[int]:
    """The doc ids one split file lists, in order (blank lines skipped)."""
    _check_split(split)
    path, text = _read_text(folder, CLIP_ID_FILES[split])
    return [_row_id(line, path, f"line {number}", None)
            for number, line in enumerate(text.split("\n"), 1) if line.strip()]


def read_clip(folder: str | os.PathLike, split: str) -> list[ClipDocument]:
    """The documents of one split, in the order its ids file lists them."""
    documents = _read_clip_sentences(folder)
    result = []
    for doc_id in read_clip_ids(folder, split):
        if doc_id not in documents:
            raise DownstreamDataError(Path(folder) / CLIP_ID_FILES[split], f"doc_id {doc_id}", None,
                                      f"has no sentences in {CLIP_SENTENCES}")
        result.append(ClipDocument(doc_id, tuple(documents[doc_id])))
    return result


# ---- a downstream folder: what it holds, which notes it names, a check command ------------

# A dataset's folder is recognised by its train file.
MARKERS = {"mednli": MEDNLI_FILES["train"], "radqa": RADQA_FILES["train"], "clip": CLIP_SENTENCES}


def dataset_folders(folder: str | os.PathLike) -> dict[str, Path]:
    """The benchmark folders `folder` holds, by dataset: `folder` itself when it is one
    dataset's folder, else its `mednli/`, `radqa/`, `clip/` (as `synth --downstream` writes)."""
    root = Path(folder)
    found = {}
    for name, marker in MARKERS.items():
        for candidate in (root / name, root):
            if (candidate / marker).is_file():
                found[name] = candidate
                break
    if not found:
        raise DownstreamDataError(root, "", None, "holds no MedNLI, RadQA or CLIP files, directly or "
                                  "in mednli/, radqa/ or clip/ (see docs/downstream.md)")
    return found


_ROW_IDS: dict[str, Callable[[Path], set[int]]] = {
    "radqa": lambda folder: {int(q.title) for split in SPLITS for q in read_radqa(folder, split)},
    "clip": lambda folder: set(_read_clip_sentences(folder)),
}


def note_row_ids(folder: str | os.PathLike) -> dict[str, set[int]]:
    """The MIMIC-III note ROW_IDs a downstream folder names, by dataset (`radqa`, `clip`).

    `folder` as for `dataset_folders`; MedNLI names no notes, so it is never listed (a folder
    with MedNLI only gives {}). Pretraining on these notes would leak the benchmarks' test sets.
    """
    return {name: _ROW_IDS[name](path) for name, path in dataset_folders(folder).items()
            if name in _ROW_IDS}


def _split_summary(name: str, folder: Path, split: str) -> str:
    """Counts of one split, never text: records and their labels."""
    if name == "mednli":
        pairs = read_mednli(folder, split)
        labels = Counter(p.label for p in pairs)
        return f"{len(pairs)} pairs ({', '.join(f'{l} {labels[l]}' for l in NLI_LABELS)})"
    if name == "radqa":
        questions = read_radqa(folder, split)
        reports = len({q.title for q in questions})
        impossible = sum(q.is_impossible for q in questions)
        return f"{len(questions)} questions on {reports} reports ({impossible} without answer)"
    documents = read_clip(folder, split)
    sentences = [s for d in documents for s in d.sentences]
    labelled = sum(bool(s.labels) for s in sentences)
    return f"{len(sentences)} sentences in {len(documents)} documents ({labelled} with labels)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clinical-t5x check-downstream",
                                     description="check MedNLI/RadQA/CLIP files and count their records")
    parser.add_argument("folder", help="one dataset's folder, or a folder holding mednli/ radqa/ clip/")
    args = parser.parse_args(argv)
    try:
        for name, folder in dataset_folders(args.folder).items():
            for split in SPLITS:
                print(f"{name} {split}: {_split_summary(name, folder, split)}")
    except DownstreamDataError as e:  # the message names file, record and field, never text
        print(f"clinical-t5x check-downstream: error: {e}", file=sys.stderr)
        return 2
    return 0
