"""What `prepare --exclude-downstream DIR` excludes: notes named by ROW_ID, patients by id.

A model pretrained on its own evaluation documents reports inflated downstream scores, so
every patient of a downstream benchmark leaves pretraining. CLIP and RadQA name MIMIC-III
notes by ROW_ID (read by `clinical_t5x.data.downstream.note_row_ids`); a `subject_ids.csv`
(one SUBJECT_ID a line, as for the n2c2 sets) names patients outright. The patients behind the
ROW_IDs, and the MIMIC-IV copies of those notes, are found by `prepare`'s first pass
(`clinical_t5x.data.first_pass`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from clinical_t5x.data import downstream
from clinical_t5x.data.mimic import is_id

SUBJECT_IDS = "subject_ids.csv"


def load_subject_ids(path: str | Path) -> frozenset[int]:
    """Subject ids, one per line (blank lines and `#` comments ignored)."""
    ids = set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            value = line.split("#", 1)[0].strip()
            if not value:
                continue
            if not is_id(value):
                raise ValueError(f"{path}:{number}: not a subject id (expected digits)")
            ids.add(int(value))
    return frozenset(ids)


@dataclasses.dataclass(frozen=True)
class Excluded:
    """The notes and patients a downstream folder names."""

    row_ids: frozenset[int]  # MIMIC-III ROW_IDs
    subjects: frozenset[int]  # patients dropped from every source
    files: dict[str, int]  # dataset (radqa, clip, subject_ids) -> ids it named


def load(folder: str | Path) -> Excluded:
    """Reads whichever of RadQA, CLIP and `subject_ids.csv` the folder holds.

    Raises FileNotFoundError naming the folder when it holds none of them, and the readers'
    one-line errors (file, record, field) for a file not in its official layout.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: downstream folder not found")
    subject_file = folder / SUBJECT_IDS
    subjects = load_subject_ids(subject_file) if subject_file.is_file() else frozenset()
    try:
        named = downstream.note_row_ids(folder)
    except downstream.DownstreamDataError as e:
        if e.path != str(folder) or e.record:  # a benchmark file not in its official layout
            raise
        named = {}  # no benchmark files at all
    if not named and not subject_file.is_file():
        raise FileNotFoundError(f"{folder}: no RadQA, CLIP or {SUBJECT_IDS} files to exclude")
    files = {name: len(ids) for name, ids in sorted(named.items())}
    if subject_file.is_file():
        files["subject_ids"] = len(subjects)
    return Excluded(row_ids=frozenset().union(*named.values()), subjects=subjects, files=files)
