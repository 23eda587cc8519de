"""MIMIC note files: their column schemas, cut into chunks of whole records, parsed by `csv`.

MIMIC-III's NOTEEVENTS.csv is about 4 GB, so a file is streamed: `RecordChunks` decompresses
it (gzip is detected by its magic bytes, not its name) and cuts the bytes into ~1 MB chunks
that end at a record boundary, without parsing: a newline ends a record when the number of
`"` before it is even (quotes inside quoted fields are doubled, so every field that csv
writers quote keeps the count even). Chunks can then be parsed by `parse_chunk` in parallel
processes with the real `csv` module (notes are multi-line quoted fields). Memory: one chunk,
or one record when a record is longer (a 10 MB note is fine); a file whose quotes never
balance (a stray quote in an unquoted field) is cut at a newline once the pending record
passes `MAX_RECORD_BYTES`, and what follows parses as malformed rows until quotes balance.

Bad input is reported, never raised, once the header is good:
- a row with the wrong number of fields or an unparseable id comes out as `Malformed`;
- invalid UTF-8 is decoded to U+FFFD and the bytes are counted (`invalid_utf8_bytes`)
  rather than dropping the note: one bad byte in a 20 kB note should not lose the note;
- a truncated or corrupt gzip ends the file where it breaks; the whole records read so far
  stand and `error` names the file and the line (no traceback);
- blank lines are not rows; they are counted (`blank_lines`).
Nothing here ever puts note text into a message: rows are named by file and line number.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import zlib
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple

# csv's default field limit is 128 KiB; a note can be megabytes. The limit is a C long.
FIELD_SIZE_LIMIT = 2**31 - 1
_GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20
MAX_RECORD_BYTES = 64 << 20  # a pending record longer than this means unbalanced quotes
MAX_HEADER_BYTES = 1 << 20  # a header not ended by then has an unbalanced quote: not read on
# Note.row = chunk index * ROWS_PER_CHUNK + row within the chunk (1-based): unique in a file.
ROWS_PER_CHUNK = 1 << 32
_KEY_SEPARATOR = "\x1f"
_INT64_DIGITS = 19


@dataclasses.dataclass(frozen=True)
class Schema:
    """Which columns of a MIMIC note file hold what we need (names matched case-insensitively)."""

    source: str  # the `source` feature of the prepared examples
    note_id: str
    subject_id: str
    category: str
    text: str
    iserror: str | None = None
    # Columns whose equal values mark a re-saved copy of one note (MIMIC-III only).
    duplicate_key: tuple[str, ...] = ()
    storetime: str | None = None
    numeric_note_id: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        names = (self.note_id, self.subject_id, self.category, self.text, self.iserror,
                 self.storetime, *self.duplicate_key)
        return tuple(dict.fromkeys(n for n in names if n))


# NOTEEVENTS: ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,STORETIME,CATEGORY,DESCRIPTION,CGID,ISERROR,TEXT
MIMIC3 = Schema(
    source="mimic3", note_id="ROW_ID", subject_id="SUBJECT_ID", category="CATEGORY",
    text="TEXT", iserror="ISERROR", storetime="STORETIME",
    duplicate_key=("CHARTTIME", "SUBJECT_ID", "CATEGORY", "CGID"), numeric_note_id=True,
)
# MIMIC-IV-Note: note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text
_MIMIC4 = dict(note_id="note_id", subject_id="subject_id", category="note_type", text="text")
MIMIC4_DISCHARGE = Schema(source="mimic4_discharge", **_MIMIC4)
MIMIC4_RADIOLOGY = Schema(source="mimic4_radiology", **_MIMIC4)
# File stem inside the MIMIC-IV note directory -> schema.
MIMIC4_FILES: dict[str, Schema] = {"discharge": MIMIC4_DISCHARGE, "radiology": MIMIC4_RADIOLOGY}
SOURCES: tuple[str, ...] = (MIMIC3.source, MIMIC4_DISCHARGE.source, MIMIC4_RADIOLOGY.source)
# The categories the official files hold (MIMIC-III CATEGORY, whitespace stripped; MIMIC-IV
# note_type). The manifest names these verbatim and counts any other string under
# `OTHER_CATEGORY`: a custom export's category column could hold anything, note text included.
KNOWN_CATEGORIES: frozenset[str] = frozenset({
    "Case Management", "Consult", "Discharge summary", "ECG", "Echo", "General", "Nursing",
    "Nursing/other", "Nutrition", "Pharmacy", "Physician", "Radiology", "Rehab Services",
    "Respiratory", "Social Work",
    "DS", "AD", "RR", "AR",
})
OTHER_CATEGORY = "(other category)"


def reportable_category(category: str) -> str:
    """`category` when it is one of `KNOWN_CATEGORIES`, else `OTHER_CATEGORY`."""
    return category if category.strip() in KNOWN_CATEGORIES else OTHER_CATEGORY


def find_mimic4_files(note_dir: str | Path) -> dict[Schema, Path]:
    """`discharge.csv(.gz)` and `radiology.csv(.gz)` in a MIMIC-IV-Note directory.

    Raises FileNotFoundError naming the directory when it holds neither.
    """
    note_dir = Path(note_dir)
    found = {}
    for stem, schema in MIMIC4_FILES.items():
        for name in (f"{stem}.csv.gz", f"{stem}.csv"):
            if (note_dir / name).is_file():
                found[schema] = note_dir / name
                break
    if not found:
        raise FileNotFoundError(
            f"{note_dir}: no discharge.csv(.gz) or radiology.csv(.gz) in this MIMIC-IV note directory")
    return found


def is_id(value: str) -> bool:
    """ASCII digits that fit the int64 `subject_id` feature (`str.isdigit` alone also takes
    "²", which `int` rejects, and any length, which the TFRecord encoder rejects)."""
    return (value.isascii() and value.isdigit() and len(value) <= _INT64_DIGITS
            and int(value) < 2**63)


class Note(NamedTuple):
    """One parsed row. `row` identifies it within its file (see `ROWS_PER_CHUNK`)."""

    row: int
    line: int  # physical line of the file where the row ends
    note_id: str
    subject_id: int
    category: str  # whitespace stripped (MIMIC-III has "Physician ", "Nursing/other", ...)
    text: str
    iserror: bool
    duplicate_key: str | None  # None when the schema has no key or a key column is empty
    storetime: str


class Malformed(NamedTuple):
    """A row that could not be read as a note; `why` never contains note text."""

    row: int
    line: int
    why: str


class Layout(NamedTuple):
    """Column positions of one file, found from its header (small: sent with every chunk)."""

    width: int
    note_id: int
    subject_id: int
    category: int
    text: int
    iserror: int | None
    storetime: int | None
    key: tuple[int, ...]
    numeric_note_id: bool
    note_id_name: str
    subject_id_name: str


class Chunk(NamedTuple):
    """Whole CSV records of one file: its `index`-th chunk, starting at line `first_line`."""

    index: int
    first_line: int
    data: bytes


class _InvalidUtf8:
    """Counts invalid UTF-8 bytes decoded (replaced by U+FFFD) in this process."""

    NAME = "clinical_t5x.data.mimic.replace_and_count"
    count = 0

    @classmethod
    def handle(cls, error: UnicodeError) -> tuple[str, int]:
        if not isinstance(error, UnicodeDecodeError):
            raise error
        cls.count += error.end - error.start
        return "\ufffd", error.end


codecs.register_error(_InvalidUtf8.NAME, _InvalidUtf8.handle)


def _decode(data: bytes) -> tuple[str, int]:
    """Text and the number of invalid UTF-8 bytes replaced in it."""
    before = _InvalidUtf8.count
    return data.decode("utf-8", _InvalidUtf8.NAME), _InvalidUtf8.count - before


def _open(path: Path) -> tuple[io.BufferedReader, BinaryIO]:
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if raw.peek(2)[:2] == _GZIP_MAGIC else raw
    return raw, stream


def _record_end(data: bytes) -> int:
    """Offset just after the last newline outside quotes (0 when there is none)."""
    odd = data.count(b'"') & 1  # quote parity at the end of `data`
    end = len(data)
    while (newline := data.rfind(b"\n", 0, end)) >= 0:
        odd ^= data.count(b'"', newline, end) & 1  # parity just before this newline
        if not odd:
            return newline + 1
        end = newline
    return 0


def _layout(header: list[str], schema: Schema, path: Path) -> Layout:
    positions = {name.strip().lstrip("\ufeff").upper(): i for i, name in enumerate(header)}
    missing = [c for c in schema.required if c.upper() not in positions]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} for {schema.source} "
                         f"(header has {len(header)} columns)")
    col = {c: positions[c.upper()] for c in schema.required}
    return Layout(
        width=len(header), note_id=col[schema.note_id], subject_id=col[schema.subject_id],
        category=col[schema.category], text=col[schema.text],
        iserror=col[schema.iserror] if schema.iserror else None,
        storetime=col[schema.storetime] if schema.storetime else None,
        key=tuple(col[c] for c in schema.duplicate_key), numeric_note_id=schema.numeric_note_id,
        note_id_name=schema.note_id, subject_id_name=schema.subject_id,
    )


def _first_record_end(data: bytes) -> int:
    """Offset just after the first newline outside quotes (0 when there is none)."""
    start = 0
    odd = 0
    while (newline := data.find(b"\n", start)) >= 0:
        odd ^= data.count(b'"', start, newline) & 1
        if not odd:
            return newline + 1
        start = newline + 1
    return 0


def _parse_header(data: bytes, schema: Schema, path: Path) -> Layout:
    if len(data) > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: no header line within the first {MAX_HEADER_BYTES} bytes "
                         "(an unbalanced quote?)")
    text, _ = _decode(data)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or not rows[0]:
        raise ValueError(f"{path}: empty file, expected a {schema.source} CSV header")
    return _layout(rows[0], schema, path)


_STREAM_ERRORS = (EOFError, OSError, zlib.error)


def check_header(path: str | Path, schema: Schema) -> None:
    """Raises ValueError naming the file and every missing column; before any work starts."""
    path = Path(path)
    raw, stream = _open(path)
    with raw, stream:
        data = b""
        try:
            while (not (end := _first_record_end(data)) and len(data) <= MAX_HEADER_BYTES
                   and (more := stream.read1(1 << 16))):
                data += more
        except _STREAM_ERRORS as e:
            raise ValueError(f"{path}: cannot read the header ({type(e).__name__})") from None
    _parse_header(data[:end] if end else data, schema, path)


class RecordChunks:
    """Iterates a MIMIC note file as `Chunk`s of whole records, in bounded memory.

    Each pass re-reads the file (deduplication reads it twice); `layout` comes from the header
    when a pass starts. After a pass: `lines` (lines consumed), `error` (None, or what ended
    the file early) and `bytes_read` (bytes of the file on disk consumed; also during a pass).
    """

    def __init__(self, path: str | Path, schema: Schema, chunk_bytes: int = CHUNK_BYTES):
        self.path, self.schema, self.chunk_bytes = Path(path), schema, chunk_bytes
        self.size = self.path.stat().st_size
        self.layout: Layout | None = None
        self.error: str | None = None
        self.lines = self._done = 0
        self._raw: io.BufferedReader | None = None

    @property
    def bytes_read(self) -> int:
        raw = self._raw
        return raw.tell() if raw is not None and not raw.closed else self._done

    def __iter__(self) -> Iterator[Chunk]:
        self.error, self.lines = None, 0
        raw, stream = _open(self.path)
        self._raw = raw
        with raw, stream:
            pending = self._header(stream)
            yield from self._chunks(stream, pending)
            self._done = raw.tell() if self.error else self.size

    def _read(self, stream: BinaryIO) -> bytes:
        """The next decompressed bytes; b"" at the end, or where the stream breaks (-> error)."""
        if self.error:
            return b""
        try:  # read1: a broken stream must not take the bytes decompressed before the break
            return stream.read1(self.chunk_bytes)
        except _STREAM_ERRORS as e:
            kind = "truncated gzip" if isinstance(e, EOFError) else "unreadable input"
            self.error = f"{self.path}: {kind} after line {self.lines} ({type(e).__name__})"
            return b""

    def _header(self, stream: BinaryIO) -> bytes:
        pending = b""
        while not (end := _first_record_end(pending)):
            data = b"" if len(pending) > MAX_HEADER_BYTES else self._read(stream)
            if not data:
                end = len(pending)
                break
            pending += data
        self.layout = _parse_header(pending[:end], self.schema, self.path)
        self.lines = pending.count(b"\n", 0, end)
        return pending[end:]

    def _chunks(self, stream: BinaryIO, pending: bytes) -> Iterator[Chunk]:
        index, pieces, size = 0, [pending], len(pending)
        want = self.chunk_bytes  # doubles while one record outgrows it: linear time for any size
        while True:
            data = self._read(stream)
            if data:
                pieces.append(data)
                size += len(data)
                if size < want:
                    continue
            pending = b"".join(pieces)
            if not data:  # the end: all of it, or only the whole records of a broken stream
                cut = _record_end(pending) if self.error else len(pending)
            else:
                cut = _record_end(pending)
                if not cut and len(pending) > MAX_RECORD_BYTES:
                    cut = pending.rfind(b"\n") + 1 or len(pending)
            if cut:
                records, pending = pending[:cut], pending[cut:]
                yield Chunk(index, self.lines + 1, records)
                index += 1
                self.lines += records.count(b"\n")
                want = self.chunk_bytes
            else:
                want = min(2 * len(pending), MAX_RECORD_BYTES + 1)
            if not data:
                return
            pieces, size = [pending], len(pending)


def parse_chunk(chunk: Chunk, layout: Layout, counts: Counter | None = None) -> Iterator[Note | Malformed]:
    """Parses one chunk with `csv`; adds rows, blank_lines and invalid_utf8_bytes to `counts`."""
    csv.field_size_limit(FIELD_SIZE_LIMIT)
    counts = Counter() if counts is None else counts
    text, invalid = _decode(chunk.data)
    counts["invalid_utf8_bytes"] += invalid
    reader = csv.reader(io.StringIO(text, newline=""))
    row, line0 = chunk.index * ROWS_PER_CHUNK, chunk.first_line - 1
    width, i_note, i_subject, i_category, i_text = (layout.width, layout.note_id, layout.subject_id,
                                                    layout.category, layout.text)
    i_error, i_store, i_key, numeric_id = layout.iserror, layout.storetime, layout.key, layout.numeric_note_id
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # the parser resumes at the next line
            row += 1
            counts["rows"] += 1
            yield Malformed(row, line0 + reader.line_num, f"CSV syntax error ({e})")
            continue
        if not fields:
            counts["blank_lines"] += 1
            continue
        row += 1
        counts["rows"] += 1
        if len(fields) != width:
            yield Malformed(row, line0 + reader.line_num, f"{len(fields)} fields, expected {width}")
            continue
        note_id = fields[i_note].strip()
        subject = fields[i_subject].strip()
        if not is_id(subject) or not note_id or (numeric_id and not is_id(note_id)):
            yield Malformed(row, line0 + reader.line_num,
                            f"unparseable {layout.subject_id_name} or {layout.note_id_name}")
            continue
        key = None
        if i_key:
            parts = [fields[i].strip() for i in i_key]
            if all(parts):
                key = _KEY_SEPARATOR.join(parts)
        yield Note(
            row=row, line=line0 + reader.line_num, note_id=note_id, subject_id=int(subject),
            category=fields[i_category].strip(), text=fields[i_text],
            iserror=i_error is not None and fields[i_error].strip() not in ("", "0"),
            duplicate_key=key, storetime=fields[i_store].strip() if i_store is not None else "",
        )


class NoteReader:
    """A file's `Note`/`Malformed` rows in one process (`RecordChunks` + `parse_chunk`).

    After a pass: `rows`, `blank_lines`, `invalid_utf8_bytes`, `error`.
    """

    def __init__(self, path: str | Path, schema: Schema, chunk_bytes: int = CHUNK_BYTES):
        self.chunks = RecordChunks(path, schema, chunk_bytes)
        self.counts: Counter = Counter()

    rows = property(lambda self: self.counts["rows"])
    blank_lines = property(lambda self: self.counts["blank_lines"])
    invalid_utf8_bytes = property(lambda self: self.counts["invalid_utf8_bytes"])
    error = property(lambda self: self.chunks.error)

    def __iter__(self) -> Iterator[Note | Malformed]:
        self.counts = Counter()
        for chunk in self.chunks:
            yield from parse_chunk(chunk, self.chunks.layout, self.counts)
