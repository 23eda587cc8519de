"""Synthetic MIMIC look-alike note files, in the exact MIMIC-III and MIMIC-IV-Note schemas.

Real MIMIC never exists on our machines, so tests, the demo and the benchmarks run on these
files. They are built to exercise every path of `prepare` and `deid`: the real category
strings (some with a trailing space), ISERROR rows, re-saved duplicates, missing CHARTTIME,
multi-line quoted text with commas and quotes, DEID placeholders of every family, MIMIC-IV
`___` blanks in typed contexts, a little unicode and uneven whitespace. Every clinical phrase
is invented and every name is a placeholder. Same seed, same bytes (gzip mtime 0).

Speed: notes are joined from a per-seed pool of pre-filled sentences (no per-character Python),
so text generation runs at tens of MB/s.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gzip
import io
import math
import os
import random
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from clinical_t5x import owner_only

MIMIC3_COLUMNS = (
    "ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
    "DESCRIPTION", "CGID", "ISERROR", "TEXT",
)
MIMIC4_COLUMNS = (
    "note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text",
)

# MIMIC-III categories with their real spelling and rough real frequency. Discharge, ECG and
# Echo have no CHARTTIME, STORETIME or CGID; Radiology has a CHARTTIME but no STORETIME/CGID.
CATEGORIES: dict[str, int] = {
    "Nursing/other": 822, "Radiology": 522, "Nursing": 223, "ECG": 209, "Physician ": 141,
    "Discharge summary": 59, "Echo": 46, "Respiratory ": 31, "Nutrition": 9, "General": 8,
    "Rehab Services": 5, "Social Work": 3, "Case Management ": 2, "Pharmacy": 1, "Consult": 1,
}
_NO_CHARTTIME = frozenset({"Discharge summary", "ECG", "Echo"})
_NO_CAREGIVER = _NO_CHARTTIME | {"Radiology"}
_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "Discharge summary": ("Report", "Report", "Report", "Addendum"),
    "ECG": ("Report",), "Echo": ("Report",),
    "Radiology": ("CHEST (PORTABLE AP)", "CT HEAD W/O CONTRAST", "ABDOMEN (SUPINE & ERECT)",
                  "MR L SPINE W/O CONTRAST"),
    "Nursing/other": ("Report",),
    "Nursing": ("Nursing Progress Note", "Generic Note", "Nursing Transfer Note"),
    "Physician ": ("Physician Resident Progress Note", "Intensivist Note",
                   "Physician Attending Admission Note"),
    "Respiratory ": ("Respiratory Care Shift Note",),
    "Case Management ": ("Case Management Initial Assessment",),
}

# Every MIMIC-III placeholder family the generator writes: (template, what DEID should make of
# it: a tag, "date" for a date kept as text, "" for the empty placeholder). Fields: {n} an id,
# {k} a small pattern digit, {y}/{m}/{d} a shifted date, {month} a month name.
MIMIC3_FAMILIES: tuple[tuple[str, str], ...] = (
    ("[**First Name{k} (NamePattern2) **]", "[Name]"),
    ("[**Last Name (NamePattern1) {n}**]", "[Name]"),
    ("[**Known lastname {n}**]", "[Name]"),
    ("[**Known firstname {n}**]", "[Name]"),
    ("[**Name (NI) {n}**]", "[Name]"),
    ("[**Initials (NamePattern4) **]", "[Name]"),
    ("[**Doctor Last Name {n}**]", "[Name]"),
    ("[**Hospital{k} {n}**]", "[Company]"),
    ("[**Company {n}**]", "[Company]"),
    ("[**University/College **]", "[Company]"),
    ("[**Location (un) {n}**]", "[LOC]"),
    ("[**Hospital Ward Name {n}**]", "[LOC]"),
    ("[**Hospital Unit Name {n}**]", "[LOC]"),
    ("[**Street Address(1) {n}**]", "[LOC]"),
    ("[**PO BOX **]", "[LOC]"),
    ("[**Telephone/Fax ({k}) {n}**]", "[#]"),
    ("[**Pager number {n}**]", "[#]"),
    ("[**Serial Number {n}**]", "[#]"),
    ("[**Social Security Number {n}**]", "[#]"),
    ("[**Provider Number {n}**]", "[#]"),
    ("[**Medical Record Number {n}**]", "[Reg#]"),
    ("[**MD Number({k}) {n}**]", "[Reg#]"),
    ("[**Clip Number (Radiology) {n}**]", "[Reg#]"),
    ("[**Job Number {n}**]", "[Reg#]"),
    ("[**Unit Number {n}**]", "[Reg#]"),
    ("[**Numeric Identifier {n}**]", "[Reg#]"),
    ("[**E-mail address {n}**]", "[CI]"),
    ("[**CC Contact Info {n}**]", "[CI]"),
    ("[**Attending Info {n}**]", "[CI]"),
    ("[**Dictator Info {n}**]", "[CI]"),
    ("[**Age over 90 **]", "[Age]"),
    ("[**Date range ({k}) {n}**]", "[DR]"),
    ("[**State {n}**]", "[State]"),
    ("[**Country {n}**]", "[Country]"),
    ("[**URL {n}**]", "[URL]"),
    ("[**Year (4 digits) **]", "[YR]"),
    ("[**Month (only) {n}**]", "[MO]"),
    ("[**Month/Day ({k}) {n}**]", "[DAY]"),
    ("[**Holiday {n}**]", "[DAY]"),
    ("[**{y}-{m}-{d}**]", "date"),
    ("[**{m}-{d}**]", "date"),
    ("[**{m}/{y}**]", "date"),
    ("[**{month} {d}**]", "date"),
    ("[**{y}**]", "date"),
    ("[** **]", ""),
    ("[**Unmapped Field {n}**]", "[MISC]"),  # an unknown label: must become [MISC], counted
)
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")

# Slot kinds used by the sentence templates -> templates of the families that can fill them.
_SLOT_FAMILIES: dict[str, tuple[str, ...]] = {
    kind: tuple(template for template, out in MIMIC3_FAMILIES if out in outs)
    for kind, outs in {
        "name": ("[Name]",), "hosp": ("[Company]",), "place": ("[LOC]", "[State]", "[Country]"),
        "phone": ("[#]",), "reg": ("[Reg#]",), "contact": ("[CI]", "[URL]"),
        "date": ("date", "[YR]", "[MO]", "[DAY]", "[DR]"), "age": ("[Age]",),
    }.items()
}
# MIMIC-IV writes every identifier as ___; ages and dates too.
_MIMIC4_BLANK = "___"

# Invented clinical phrases (plainly synthetic), combined into sentences at pool build time.
_SUBJECTS = (
    "Pt", "Patient", "The patient", "Pt's family", "Resp therapist", "Night RN", "Team",
    "Ortho service", "Pt's spouse", "Consulting team",
)
_VERBS = (
    "reports", "denies", "was noted to have", "continues with", "remains with", "tolerated",
    "was started on", "was weaned off", "developed", "was evaluated for",
)
_FINDINGS = (
    "mild dyspnea on exertion", "intermittent chest discomfort", "stable hemodynamics",
    "low grade temp 37.9 °C", "a small left pleural effusion", "guaic positive stool",
    "new onset afib with RVR", "poor PO intake", "increased secretions, thick and tan",
    "labile BPs, SBP 90-140", "heparin gtt at 900 units/hr", "insulin sliding scale",
    "diuresis with lasix 40 mg IV", "pain 4/10, improved with tylenol", "clear lung sounds",
    "bibasilar crackles", "trace LE edema", "a naïve response to levo 0.1 µg/kg/min",
    "UOP ~30–50 cc/hr", "sats 94% on 2L NC", "K 3.4, repleted", "creat 1.2 → 1.0",
    "ambulation with PT x2", "a stage II sacral decub, dsg changed",
)
_QUALIFIERS = (
    "", " overnight", " since admission", " per report", " this am", " ±  mild distress",
    ", will monitor", ", plan to recheck in am", ", MD aware", ", family updated",
    ' and states "I feel better, thanks"', ' ("as usual")',
)
# Sentence templates with slots; the same templates serve both styles.
_SLOT_SENTENCES = (
    "Seen by Dr. {name} from {hosp} on {date}.",
    "Pt transferred from {hosp} {place} on {date}.",
    "Family contact: {name} (wife), tel {phone}.",
    "Please call {name} at {phone} with questions.",
    "Admitted {date}; last seen at {place}.",
    "MRN {reg}, ordered by {name} MD {reg}.",
    "Discussed with attending {name}, see {contact}.",
    "Pt lives with daughter in {place}, PCP is Dr. {name}.",
    "Followup with {name} on {date} at {hosp}.",
    "Prior imaging {date} at {hosp}, report {reg}.",
    "Pt is a {age} year old, DOB {date}.",
)
_SLOT = re.compile(r"\{(\w+)\}")
_MIMIC4_TYPED_LINES = (
    "Name:  ___                     Unit No:   ___",
    "Admission Date:  ___              Discharge Date:   ___",
    "Date of Birth:  ___             Sex:   {sex}",
    "Attending: ___.",
    "Facility:\n___",
    "Dr. ___ was notified; Phone: ___",
)


# Separators between sentences: single and double spaces, new lines, a line holding one space
# (common in MIMIC-IV), a tab, trailing spaces and the odd non-breaking space.
_SEPARATORS = (" ", " ", " ", "  ", "\n", "\n", "\n \n", "\t", "   \n", "\u00a0", "\n\n")


def _fill(template: str, rng: random.Random) -> str:
    """One concrete placeholder from a family template (ids and shifted dates drawn)."""
    if "{" not in template:
        return template
    return template.format(
        n=rng.randint(1, 99999), k=rng.randint(1, 9), y=rng.randint(2100, 2199),
        m=rng.randint(1, 12), d=rng.randint(1, 28), month=rng.choice(_MONTH_NAMES),
    )


def _slot_filler(style: str, rng: random.Random) -> Callable[[str], str]:
    if style == "mimic4":
        return lambda kind: _MIMIC4_BLANK
    return lambda kind: _fill(rng.choice(_SLOT_FAMILIES[kind]), rng)


def _sentence_pool(style: str, rng: random.Random, size: int = 4096) -> list[str]:
    """Pre-filled sentences, each with its separator: about one in eight carries placeholders,
    near the density of real notes."""
    fill = _slot_filler(style, rng)
    pool = []
    for _ in range(size):
        if rng.random() < 0.125:
            template = rng.choice(_SLOT_SENTENCES)
            sentence = _SLOT.sub(lambda m: fill(m.group(1)), template)
        else:
            sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_FINDINGS)}"
            sentence += rng.choice(_QUALIFIERS) + "."
        pool.append(sentence + rng.choice(_SEPARATORS))
    return pool


class _Writer:
    """Builds note texts from a sentence pool; one instance (own random stream) per file."""

    def __init__(self, style: str, seed: int, stream: str):
        self.rng = random.Random(f"clinical_t5x.synth/{stream}/{seed}")
        self.pool = _sentence_pool(style, self.rng)

    def body(self, sentences: int) -> str:
        return "".join(self.rng.choices(self.pool, k=sentences))

    def section(self, title: str, sentences: int) -> str:
        return f"{title}:\n{self.body(sentences)}\n"


def _mimic3_text(w: _Writer, category: str, description: str, row: int) -> str:
    """A MIMIC-III note; row i also carries family i % F so every family shows up early."""
    rng = w.rng
    family = _fill(MIMIC3_FAMILIES[row % len(MIMIC3_FAMILIES)][0], rng)
    date = "[**{y}-{m}-{d}**]"
    if category == "Discharge summary":
        return "".join([
            f"Admission Date:  {_fill(date, rng)}              "
            f"Discharge Date:   {_fill(date, rng)}\n\n",
            f"Date of Birth:  {_fill(date, rng)}             Sex:   {rng.choice('MF')}\n\n",
            "Service: MEDICINE\n\n",
            w.section("HISTORY OF PRESENT ILLNESS", rng.randint(15, 40)),
            w.section("HOSPITAL COURSE", rng.randint(20, 60)),
            w.section("DISCHARGE MEDICATIONS", rng.randint(4, 12)),
            f"Contact: {family}\n",
            f"                        {_fill(rng.choice(MIMIC3_FAMILIES)[0], rng)}, MD  "
            f"{_fill('[**MD Number({k}) {n}**]', rng)}\n\n",
            f"Dictated By:{_fill('[**Last Name (NamePattern1) {n}**]', rng)}\n",
        ])
    if category == "Echo":
        return (
            f"PATIENT/TEST INFORMATION:\nIndication: {rng.choice(_FINDINGS)}.\n"
            f"Height: (in) {rng.randint(58, 76)}\nWeight (lb): {rng.randint(90, 300)}\n"
            f"BP (mm Hg): {rng.randint(85, 180)}/{rng.randint(40, 100)}\n"
            f"Date/Time: {_fill(date, rng)} at {rng.randint(7, 18)}:{rng.randint(10, 59)}\n"
            f"Test: TTE (Complete)\n\n{w.section('Conclusions', rng.randint(3, 12))}"
            f"Read by: {family}\n"
        )
    if category == "ECG":
        return f"Sinus rhythm. {w.body(rng.randint(2, 5))}\nRef: {family}\n"
    if category == "Radiology":
        return (
            f"{_fill(date, rng)} 10:12 AM\n {description}   "
            f"Clip # {_fill('[**Clip Number (Radiology) {n}**]', rng)}\n Reason: {w.body(2)}\n"
            f"______________________________________________________________________________\n"
            f"{w.section(' FINAL REPORT', rng.randint(5, 20))} {family}\n"
        )
    return f"{w.body(rng.randint(6, 30))}\n{family}\n{w.body(rng.randint(0, 8))}"


def _mimic4_text(w: _Writer, note_type: str) -> str:
    rng = w.rng
    if note_type in ("DS", "AD"):
        header = "\n \n".join(line.format(sex=rng.choice("MF")) for line in _MIMIC4_TYPED_LINES)
        return (
            f" \n{header}\n \nService: MEDICINE\n \nAllergies: \nPatient recorded as having "
            f"No Known Allergies to Drugs\n \n"
            f"{w.section('History of Present Illness', rng.randint(15, 40))} \n"
            f"{w.section('Brief Hospital Course', rng.randint(20, 70))} \n"
            f"{w.section('Discharge Instructions', rng.randint(4, 12))}"
            "Followup Instructions:\n___\n"
        )
    return (
        f"EXAMINATION:  CHEST (PA AND LAT)\n\nINDICATION:  ___ year old woman with "
        f"{rng.choice(_FINDINGS)}  // ?{rng.choice(_FINDINGS)}\n\n"
        "TECHNIQUE:  Chest PA and lateral\n\n"
        f"COMPARISON:  ___\n\n{w.section('FINDINGS', rng.randint(3, 15))}\n"
        f"IMPRESSION: \n\n{w.body(rng.randint(1, 4))}\n"
    )


def _date(rng: random.Random) -> datetime.datetime:
    """A shifted date as MIMIC stores them (years 2100-2200)."""
    base = datetime.datetime(2100, 1, 1)
    return base + datetime.timedelta(minutes=rng.randrange(100 * 365 * 24 * 60))


def _ts(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _mimic3_rows(notes: int, seed: int) -> Iterator[tuple]:
    """MIMIC-III rows in schema order. Every category shows up in the first 15 rows; about one
    row in 25 is a re-saved duplicate (same keys, later STORETIME), one in 97 has ISERROR=1."""
    w = _Writer("mimic3", seed, stream="mimic3")
    rng = w.rng
    names, weights = list(CATEGORIES), list(CATEGORIES.values())
    subjects = [rng.randint(1, 99999) for _ in range(max(1, notes // 12))]
    last_resavable: list | None = None
    for i in range(notes):
        if i % 25 == 24 and last_resavable is not None:
            row = list(last_resavable)
            row[0] = i + 1
            resaved = datetime.datetime.fromisoformat(row[5])
            row[5] = _ts(resaved + datetime.timedelta(minutes=rng.randint(1, 90)))
            row[10] = row[10] + f"\n{w.body(2)}"  # the re-saved version, edited
            yield tuple(row)
            continue
        category = names[i] if i < len(names) else rng.choices(names, weights)[0]
        subject = rng.choice(subjects)
        outpatient = category in ("ECG", "Radiology") and rng.random() < 0.1
        hadm = "" if outpatient else 100000 + (subject * 7 + rng.randrange(3)) % 100000
        chart = _date(rng)
        chartdate = chart.strftime("%Y-%m-%d")
        charttime = "" if category in _NO_CHARTTIME else _ts(chart)
        caregiver = category not in _NO_CAREGIVER
        stored = chart + datetime.timedelta(minutes=rng.randint(1, 600))
        storetime = _ts(stored) if caregiver else ""
        cgid = rng.randint(14000, 21000) if caregiver else ""
        iserror = 1 if i % 97 == 40 else ""
        description = rng.choice(_DESCRIPTIONS.get(category, ("Report",)))
        row = [i + 1, subject, hadm, chartdate, charttime, storetime, category, description,
               cgid, iserror, _mimic3_text(w, category, description, i)]
        if caregiver and not iserror:
            last_resavable = row
        yield tuple(row)


def _mimic4_rows(note_types: tuple[str, str], notes: int, seed: int) -> Iterator[tuple]:
    """MIMIC-IV-Note rows: note_id `<subject>-<type>-<seq>`; one in 20 is an addendum."""
    main_type, addendum = note_types
    w = _Writer("mimic4", seed, stream=f"mimic4-{main_type}")
    rng = w.rng
    subjects = [rng.randint(10_000_000, 19_999_999) for _ in range(max(1, notes // 4))]
    next_seq: dict[int, int] = {}
    for i in range(notes):
        note_type = addendum if i % 20 == 19 else main_type
        subject = rng.choice(subjects)
        seq = next_seq.get(subject, rng.randint(1, 30))
        next_seq[subject] = seq + 1
        chart = _date(rng).replace(hour=0, minute=0) if main_type == "DS" else _date(rng)
        stored = chart + datetime.timedelta(minutes=rng.randint(30, 4000))
        store = "" if rng.random() < 0.02 else _ts(stored)
        outpatient = main_type == "RR" and rng.random() < 0.3
        hadm = "" if outpatient else rng.randint(20_000_000, 29_999_999)
        yield (f"{subject}-{note_type}-{seq}", subject, hadm, note_type, seq, _ts(chart), store,
               _mimic4_text(w, note_type))


# MIMIC-III's CSV style: the string columns are always quoted (quotes doubled), the rest bare.
_QUOTED_COLUMNS = frozenset(MIMIC3_COLUMNS.index(c) for c in ("CATEGORY", "DESCRIPTION", "TEXT"))


def _mimic3_line(row: tuple) -> str:
    return ",".join(
        '"' + v.replace('"', '""') + '"' if i in _QUOTED_COLUMNS else str(v)
        for i, v in enumerate(row)
    ) + "\n"


def _mimic3_lines(rows: Iterator[tuple]) -> Iterator[str]:
    yield ",".join(f'"{c}"' for c in MIMIC3_COLUMNS) + "\n"
    for row in rows:
        yield _mimic3_line(row)


def _mimic4_lines(rows: Iterator[tuple]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MIMIC4_COLUMNS)
    for row in rows:
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _write_gzip(path: Path, lines: Iterator[str], progress: tqdm | None) -> None:
    """Owner-only, byte-deterministic (mtime 0, fixed name), atomic (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with owner_only.open_file(tmp) as raw, gzip.GzipFile(
        path.stem, "wb", compresslevel=6, fileobj=raw, mtime=0
    ) as gz:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= 512:
                gz.write("".join(chunk).encode("utf-8"))
                chunk.clear()
            if progress is not None:
                progress.update()
        gz.write("".join(chunk).encode("utf-8"))
    os.replace(tmp, path)


def mimic4_counts(notes: int) -> dict[str, int]:
    """MIMIC-IV rows written alongside `notes` MIMIC-III rows: discharge 1/8, radiology 1/4
    (rounded up), roughly MIMIC-IV-Note's discharge:radiology proportion at a test-friendly size."""
    return {"discharge": math.ceil(notes / 8), "radiology": math.ceil(notes / 4)}


def _make_private_dirs(path: Path) -> None:
    """Creates `path` and its missing parents owner-only. Folders that exist keep their mode
    (`--out .` must not lock the user out of their own folder); the files are 0o600 anyway."""
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(mode=owner_only.DIR_MODE, exist_ok=True)
            os.chmod(folder, owner_only.DIR_MODE)  # mkdir's mode is filtered by the umask


def write_synthetic(
    out_dir: str | os.PathLike, notes: int, seed: int, progress: bool = False
) -> dict[str, Path]:
    """Writes the three MIMIC look-alike files; returns their paths keyed by source name
    (`mimic3`, `mimic4_discharge`, `mimic4_radiology`). `notes` = MIMIC-III rows (duplicates
    and ISERROR rows included); the MIMIC-IV files get `mimic4_counts(notes)` rows."""
    if notes < 1:
        raise ValueError(f"notes must be >= 1, got {notes}")
    out = Path(out_dir)
    _make_private_dirs(out / "note")
    counts = mimic4_counts(notes)
    jobs = {
        "mimic3": (out / "NOTEEVENTS.csv.gz", _mimic3_lines(_mimic3_rows(notes, seed)), notes),
        "mimic4_discharge": (out / "note" / "discharge.csv.gz",
                             _mimic4_lines(_mimic4_rows(("DS", "AD"), counts["discharge"], seed)),
                             counts["discharge"]),
        "mimic4_radiology": (out / "note" / "radiology.csv.gz",
                             _mimic4_lines(_mimic4_rows(("RR", "AR"), counts["radiology"], seed)),
                             counts["radiology"]),
    }
    paths = {}
    for source, (path, lines, rows) in jobs.items():
        bar = tqdm(total=rows + 1, desc=source, unit="row", file=sys.stderr) if progress else None
        _write_gzip(path, lines, bar)
        if bar is not None:
            bar.close()
        paths[source] = path
    return paths


def synthetic_notes(n: int, seed: int, style: str = "mimic3") -> list[str]:
    """`n` raw note texts (placeholders in place), the same texts the files would hold.

    style "mimic3": MIMIC-III notes of all categories; "mimic4": the first third discharge
    summaries, the rest radiology reports.
    """
    if style == "mimic3":
        return [row[-1] for row in _mimic3_rows(n, seed)]
    if style == "mimic4":
        discharge = n // 3
        return [row[-1] for row in _mimic4_rows(("DS", "AD"), discharge, seed)] + [
            row[-1] for row in _mimic4_rows(("RR", "AR"), n - discharge, seed)
        ]
    raise ValueError(f"style must be 'mimic3' or 'mimic4', got {style!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clinical-t5x synth", description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="output folder for the note files (created owner-only)")
    parser.add_argument("--downstream", metavar="OUT",
                        help="write synthetic MedNLI, RadQA and CLIP folders under OUT instead")
    parser.add_argument(
        "--notes", type=int, default=1000, help="MIMIC-III rows (MIMIC-IV: 1/8 + 1/4 of that)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.notes < 1:
        parser.error(f"--notes must be >= 1, got {args.notes}")
    if (args.out is None) == (args.downstream is None):
        parser.error("give exactly one of --out (note files) and --downstream (benchmark files)")
    if args.downstream is not None:
        from clinical_t5x.data import synth_downstream  # imports this module
        for name, folder in synth_downstream.write_downstream(args.downstream, args.seed).items():
            print(f"{name}: {folder}")
        return 0
    paths = write_synthetic(args.out, args.notes, args.seed, progress=True)
    for source, path in paths.items():
        print(f"{source}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
