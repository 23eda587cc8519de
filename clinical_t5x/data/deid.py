"""DEID tags: the canonical tag tuple and the replacement of MIMIC de-identification placeholders."""

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable

# The Clinical-T5 tag set, in canonical order. Vocabulary ids, the HF export and the tests all
# read it from here: tag i gets id S + 100 + i (after S pieces and 100 sentinels).
TAGS: tuple[str, ...] = (
    "[Name]", "[Reg#]", "[Company]", "[LOC]", "[Age]", "[#]", "[DR]", "[State]",
    "[CI]", "[Country]", "[URL]", "[YR]", "[MO]", "[DAY]", "[MISC]",
)

# MIMIC-III placeholder labels -> tag. Keys are written as they appear in the notes; they are
# normalised by `_label_key` exactly like the labels found in text, so "First Name8
# (NamePattern2)", "FirstName" and "first name" all share one entry while "Hospital Ward Name"
# (a place) never matches "Hospital" (a company). Dates are not here: see `_DATE`.
_LABEL_TAGS: dict[str, tuple[str, ...]] = {
    "[Name]": (
        "First Name", "Last Name", "Known firstname", "Known lastname", "Name", "Initial",
        "Initials", "Name Initial", "Name Prefix", "Doctor First Name", "Doctor Last Name",
        "Female First Name", "Male First Name", "Patient Name",
    ),
    "[Company]": ("Hospital", "Company", "University/College", "College", "University"),
    "[Reg#]": (
        "Medical Record Number", "MD Number", "Clip Number", "Job Number", "Unit Number",
        "Numeric Identifier", "Hospital Unit Number", "Record Number",
    ),
    "[LOC]": (
        "Location", "Street Address", "Apartment Address", "Address", "Hospital Ward Name",
        "Hospital Unit Name", "Wardname", "PO BOX", "State/Zipcode", "Zipcode",
    ),
    "[#]": (
        "Telephone/Fax", "Telephone", "Fax", "Pager number", "Serial Number",
        "Social Security Number", "Provider Number",
    ),
    "[CI]": ("E-mail address", "CC Contact Info", "Attending Info", "Dictator Info"),
    "[Age]": ("Age over 90",),
    "[DR]": ("Date range", "Date Range"),
    "[State]": ("State",),
    "[Country]": ("Country",),
    "[URL]": ("URL",),
    "[YR]": ("Year (4 digits)", "Year (2 digits)", "Year"),
    "[MO]": ("Month (only)", "Month", "Month/Year", "Month Year", "Year/Month"),
    # A day-resolution date whose text MIMIC hid (as opposed to a shifted date it kept).
    "[DAY]": (
        "Day (only)", "Holiday", "Month/Day", "Month Day", "Day Month", "Month/Day/Year",
        "Day Month Year", "Year/Month/Day",
    ),
}

# The whole placeholder; its text must stay on one line and be short (anything else is prose).
_PLACEHOLDER = re.compile(r"\[\*\*([^\n]{0,120}?)\*\*\]")
# Label normalisation: the trailing id, "(NamePattern2)"-style qualifiers, digits glued to a word
# ("Hospital1", "First Name8", "MD Number(1)"), then case, spaces and punctuation but "/".
_TRAILING_ID = re.compile(r"\s+\d+\s*$")
_QUALIFIER = re.compile(r"\([^)]*\)")
_GLUED_DIGITS = re.compile(r"(?<=[A-Za-z])\d+")
_NOT_KEY = re.compile(r"[^a-z/]")
_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|"
    "july|august|september|october|november|december"
)
_MONTH_PREFIXES = frozenset(month[:3] for month in _MONTHS.split("|"))
# Dates MIMIC-III shifted but kept: 2151-8-5, 4-1, 8/2146, 3/1/2150, 2-/2186, 2150, January 3.
_DATE = re.compile(
    rf"(?:\d{{1,4}}(?:[-/.]{{1,2}}\d{{1,4}}){{0,2}}|(?:{_MONTHS})\.?(?:\s+\d{{1,2}}(?:st|nd|rd|th)?)?"
    rf",?(?:\s+\d{{2,4}})?)(?:\s+\d{{1,2}}:\d{{2}}(?::\d{{2}})?)?",
    re.IGNORECASE,
)
# MIMIC-IV hides every identifier as exactly three underscores (longer runs are form lines).
# The pattern starts with the literal (the look-behind after it: no "_" before the three), so
# `re` scans for "___" at C speed instead of trying the look-behind at every position (~4x).
_BLANK = re.compile(r"___(?<!____)(?!_)")
# Left contexts that type a MIMIC-IV blank unambiguously: the last one to three words before it,
# lowercased, without the trailing ":", "." or "#" (see `replace_mimic4`).
_CONTEXT_TAGS: dict[str, tuple[str, ...]] = {
    "[Name]": (
        "name", "patient name", "first name", "last name", "attending", "dr", "mr", "mrs", "ms",
        "miss", "completed by", "dictated by", "signed electronically by",
    ),
    "[Reg#]": ("unit no", "mrn", "medical record no", "medical record number", "job", "job no"),
    "[DAY]": (
        "admission date", "discharge date", "date of birth", "dob", "surgery date",
        "transfer date",
    ),
    "[#]": ("phone", "telephone", "tel", "fax", "pager", "phone number", "pager number"),
    "[Company]": ("facility",),
    "[CI]": ("e-mail", "email"),
}
_CONTEXT_PHRASE_TAG = {phrase: tag for tag, phrases in _CONTEXT_TAGS.items() for phrase in phrases}
_CONTEXT_WINDOW = 48
_CONTEXT_TRAILING = " \t\r\n\u00a0:.#"
_CONTEXT_LEADING = "([{\"',;"
_MISC = "[MISC]"
# Markers in the label cache for the two placeholder kinds that are not tags.
_DATE_TEXT, _EMPTY = "date", ""
# Unknown labels are counted by their label (id removed, truncated), never by note text.
_MAX_LABEL_CHARS = 40
# A label is recorded only when it is label-shaped (a few words of letters, short numbers and
# label punctuation) AND every word is one of MIMIC's label words below; anything else (a
# custom export's `[**Mary Jones**]`, a malformed placeholder holding prose) is counted under
# `_UNREADABLE_LABEL`. So the manifest can only ever show words from this fixed list.
_LABEL_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9()/#.,' -]*")
_MAX_LABEL_WORDS = 5
# One whitespace-separated word of a label: letters (joined by "/", "'" or "-"), at most two
# digits glued on or alone ("First Name8", "(NamePattern4)", "Age over 90", "Address(1)"),
# never a number joined to another ("3/4", "555-1234").
_LABEL_TOKEN = re.compile(r"\(?[A-Za-z]*(?:[/'-][A-Za-z]+)*\d{0,2}\)?(?:\(\d{1,2}\))?,?")
_UNREADABLE_LABEL = "(unreadable label)"
_WORD = re.compile(r"[A-Za-z]+")
# Words of MIMIC-III's placeholder labels and their qualifiers, lowercased; the words of every
# label in `_LABEL_TAGS` are added below.
_EXTRA_LABEL_WORDS = frozenset("""
    ambig amb attending box cc contact day dictator digits doctor email female first
    hospital info initial initials known last lf location male md month name namepattern
    ni numeric over pattern po pre prefix prefixes radiology record serial social sname
    stitle street titles un universities unit ward wardname year zip zipcode code county
    countries only holiday range date number of
""".split())
_MAX_CACHE = 4096


def _label_key(label: str) -> str:
    """Normalises a placeholder label so that spelling variants of one label share a key."""
    label = _TRAILING_ID.sub("", label.strip())
    label = _GLUED_DIGITS.sub("", _QUALIFIER.sub("", label))
    return _NOT_KEY.sub("", label.lower())


_KEY_TO_TAG: dict[str, str] = {
    _label_key(label): tag for tag, labels in _LABEL_TAGS.items() for label in labels
}
_LABEL_WORDS: frozenset[str] = _EXTRA_LABEL_WORDS | {
    word.lower() for labels in _LABEL_TAGS.values() for label in labels
    for word in _WORD.findall(label)
}
# Placeholder text without its trailing id -> tag, `_DATE_TEXT` or `_EMPTY` (None: unknown).
_cache: dict[str, str | None] = {}


@dataclasses.dataclass
class DeidCounts:
    """How many placeholders became each tag, which unknown labels were seen, dates kept.

    Mergeable across shards and worker processes (plain Counters, so it pickles).
    """

    tags: Counter[str] = dataclasses.field(default_factory=Counter)
    unknown_labels: Counter[str] = dataclasses.field(default_factory=Counter)
    dates_as_text: int = 0
    empty: int = 0

    def merge(self, other: "DeidCounts") -> "DeidCounts":
        """Adds `other` into this one (in place) and returns self."""
        self.tags.update(other.tags)
        self.unknown_labels.update(other.unknown_labels)
        self.dates_as_text += other.dates_as_text
        self.empty += other.empty
        return self

    def as_dict(self) -> dict:
        """JSON-ready: every tag in canonical order (zeros included), unknown labels by count."""
        return {
            "tags": {tag: self.tags.get(tag, 0) for tag in TAGS},
            "unknown_labels": dict(
                sorted(self.unknown_labels.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            "dates_as_text": self.dates_as_text,
            "empty": self.empty,
        }


def _reportable_label(inner: str) -> str:
    """The label of an unknown placeholder as the manifest may show it: only MIMIC label words
    (`_LABEL_WORDS`) and short numbers (`_LABEL_TOKEN`), else `_UNREADABLE_LABEL`."""
    label = _TRAILING_ID.sub("", inner).strip()[:_MAX_LABEL_CHARS]
    if (_LABEL_SHAPE.fullmatch(label) and len(label.split()) <= _MAX_LABEL_WORDS
            and all(_LABEL_TOKEN.fullmatch(token) for token in label.split())
            and all(word.lower() in _LABEL_WORDS for word in _WORD.findall(label))):
        return label
    return _UNREADABLE_LABEL


def _classify(inner: str) -> str | None:
    """Placeholder text (without `[**`/`**]`) -> tag, `_DATE_TEXT`, `_EMPTY`, or None (unknown)."""
    stripped = inner.strip()
    if not stripped:
        return _EMPTY
    if _DATE.fullmatch(stripped):
        return _DATE_TEXT
    return _KEY_TO_TAG.get(_label_key(stripped))


def _replace_placeholder(match: re.Match, counts: DeidCounts | None) -> str:
    inner = match.group(1)
    # Dates and ids make most placeholder texts unique; cache a label on its text without the id.
    # Not a date: "March 3" (kept as text) and "March 123456" (unknown) must not share "March".
    cache_key = inner
    if inner[:1].isalpha():
        stripped = _TRAILING_ID.sub("", inner)
        if inner[:3].lower() not in _MONTH_PREFIXES or not _DATE.fullmatch(stripped.strip()):
            cache_key = stripped
    try:
        kind = _cache[cache_key]
    except KeyError:
        kind = _classify(inner)
        if len(_cache) < _MAX_CACHE:
            _cache[cache_key] = kind
    if kind == _DATE_TEXT:
        if counts is not None:
            counts.dates_as_text += 1
        return inner.strip()
    if kind is None:
        if counts is not None:
            counts.tags[_MISC] += 1
            counts.unknown_labels[_reportable_label(inner)] += 1
        return _MISC
    if counts is not None:
        if kind:
            counts.tags[kind] += 1
        else:
            counts.empty += 1
    return kind


def replace_mimic3(text: str, counts: DeidCounts | None = None) -> str:
    """Replaces MIMIC-III `[**...**]` placeholders by tags; the text around them is untouched.

    Labels map to tags by `_LABEL_TAGS` (matched on the whole normalised label, never on a
    substring); shifted dates (`2151-8-5`, `4-1`, `8/2146`, `January 3`) stay as plain text;
    an empty placeholder becomes nothing; an unknown label becomes `[MISC]` and is counted.
    """
    if "[**" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: _replace_placeholder(m, counts), text)


def _context_tag(text: str, start: int) -> str:
    """The tag that the words just left of `text[start]` give a blank, longest phrase first."""
    window = text[max(0, start - _CONTEXT_WINDOW):start].rstrip(_CONTEXT_TRAILING).lower()
    words = window.split()[-3:]
    for k in range(len(words), 0, -1):
        tag = _CONTEXT_PHRASE_TAG.get(" ".join(words[-k:]).lstrip(_CONTEXT_LEADING))
        if tag is not None:
            return tag
    return _MISC


def _typed_blank(match: re.Match, counts: DeidCounts | None) -> str:
    tag = _context_tag(match.string, match.start())
    if counts is not None:
        counts.tags[tag] += 1
    return tag


def replace_mimic4(text: str, typed: bool = False, counts: DeidCounts | None = None) -> str:
    """Replaces MIMIC-IV `___` blanks (exactly three underscores) by `[MISC]`.

    With `typed=True` a blank is typed from its left context only: the last one to three words
    before it (within 48 characters, case-insensitive, spaces, line breaks and a trailing ":",
    "." or "#" ignored) are looked up in `_CONTEXT_TAGS`, longest phrase first:
    `Name:`, `Dr.`, `Mr.`, `Mrs.`, `Attending:`, `Completed by:`, `Dictated by:` -> `[Name]`;
    `Unit No:`, `MRN:`, `Job#:` -> `[Reg#]`; `Phone:`, `Fax:`, `Pager #` -> `[#]`;
    `Facility:` -> `[Company]`; `E-mail:` -> `[CI]`; `Admission Date:`, `Discharge Date:`,
    `Date of Birth:`, `DOB:` -> `[DAY]` (MIMIC-IV hides the whole date, which in the MIMIC-III
    mapping is a hidden day-resolution date). Anything else stays `[MISC]`: a right context
    (`___ year old`, `at ___ Hospital`) is never used, because the same words follow ages,
    names and places alike.
    """
    if "___" not in text:
        return text
    if typed:
        return _BLANK.sub(lambda m: _typed_blank(m, counts), text)
    if counts is None:
        return _BLANK.sub(_MISC, text)
    replaced, n = _BLANK.subn(_MISC, text)
    counts.tags[_MISC] += n
    return replaced


def replace_list_of_notes(notes: Iterable[str], note_type: str = "mimic-iii") -> list[str]:
    """The Clinical-T5 release's entry point: `note_type` is "mimic-iii" or "mimic-iv"."""
    if note_type == "mimic-iii":
        return [replace_mimic3(note) for note in notes]
    if note_type == "mimic-iv":
        return [replace_mimic4(note) for note in notes]
    raise ValueError(f"note_type must be 'mimic-iii' or 'mimic-iv', got {note_type!r}")


# What stands for hidden text in brackets: a MIMIC-III placeholder (as `_PLACEHOLDER`) or a
# tag. One pattern starting with "[" (and `_BLANK` apart) scans ~4x faster than one alternation.
_BRACKETED = re.compile(r"\[(?:\*\*[^\n]{0,120}?\*\*|" + "|".join(re.escape(t[1:-1]) for t in TAGS) + r")\]")


def mask(text: str, token: str) -> str:
    """Every placeholder, blank or tag replaced by `token`, whatever its family.

    The same note de-identified twice (MIMIC-III and MIMIC-IV hide the same facts differently)
    or once raw and once prepared then differs only where MIMIC-III kept a shifted date, so
    near-duplicate and contamination matching compare what the de-identification left alone.
    """
    if "[" in text:
        text = _BRACKETED.sub(token, text)
    if "___" in text:
        text = _BLANK.sub(token, text)
    return text
