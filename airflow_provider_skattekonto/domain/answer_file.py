"""Our model of Skatteverket's answer-file layout: a streaming parser with strict validation, and a writer.

Skatteverket's file description ("Bilaga filbeskrivning ... v1.0") is not public. The layout below is
**our model**, to be checked against that appendix; it is documented in ``docs/answer-file-layout.md``.
The whole layout lives in :data:`LAYOUT` (one table), so correcting it is a change to this module only.

* UTF-8 (a BOM is tolerated when reading), one record per line, lines end in CRLF (LF also accepted).
  A line holds at most :data:`MAX_LINE_BYTES` bytes (64 KiB, line end included); no field holds a control
  character (U+0000-U+001F, U+007F).
* Fields separated by ``;`` with RFC 4180 quoting (a text may contain ``;`` or ``"``).
* The first field is the record type: ``H`` header, ``S`` balance (saldo) of one principal followed by
  its ``T`` transactions (a block), ``E`` trailer with counts and a control sum.
* Amounts: decimal comma, optional leading minus, exactly two decimals, no thousands separators
  (``-12345,00``); the model holds integers in öre.

:func:`parse_answer_file` is a generator: it yields records while it reads and holds only the set of
principal ids seen. A consumer knows the file is valid only once it has received the
:class:`~airflow_provider_skattekonto.domain.records.FileTrailer` (yielded last, after the counts and
the control sum were checked); an :class:`AnswerFileError` may be raised at any point before it, so the
consumer must treat the stream as all-or-nothing (e.g. load inside one database transaction and commit
only after the trailer). Pure: no Airflow import, no network I/O.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as dt
import io
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, BinaryIO, NamedTuple

from airflow_provider_skattekonto.domain.identifiers import (
    InvalidIdentifierError,
    normalize_organisation_number,
    normalize_principal_id,
)
from airflow_provider_skattekonto.domain.records import (
    Balance,
    FileHeader,
    FileTrailer,
    Record,
    Transaction,
    TransactionBatch,
)

__all__ = [
    "LAYOUT",
    "LAYOUT_VERSION",
    "MAX_LINE_BYTES",
    "SUPPORTED_LAYOUT_VERSIONS",
    "AnswerFileError",
    "Block",
    "FieldSpec",
    "format_amount",
    "iter_blocks",
    "parse_amount",
    "parse_answer_batches",
    "parse_answer_file",
    "write_answer_file",
]

LAYOUT_VERSION = "1.0"
SUPPORTED_LAYOUT_VERSIONS = frozenset({LAYOUT_VERSION})

DELIMITER = ";"
LINE_TERMINATOR = "\r\n"
ENCODING = "utf-8"

_READ_CHUNK = 1 << 16
MAX_LINE_BYTES = 1 << 16
"""The longest line the parser reads (64 KiB, line end included; a real record is under 1 KiB). A longer
line is refused before it is held in memory, so memory stays flat on any input."""
_MAX_SHOWN_VALUE = 60
_LAYOUT_DOC = "docs/answer-file-layout.md"


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------
class AnswerFileError(ValueError):
    """An answer file that does not follow the layout; names the file, line, field and value.

    ``line_number`` is 1-based (physical line in the file), ``None`` for file-level problems (e.g. a
    missing trailer). ``field`` and ``value`` are ``None`` when the problem is not about one field.
    """

    def __init__(
        self,
        reason: str,
        *,
        source_name: str,
        line_number: int | None = None,
        field: str | None = None,
        value: str | None = None,
        advice: str | None = None,
    ) -> None:
        self.reason = reason
        self.source_name = source_name
        self.line_number = line_number
        self.field = field
        self.value = value
        self.advice = advice or _DEFAULT_ADVICE
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.source_name
        if self.line_number is not None:
            where += f" line {self.line_number}"
        if self.field is not None:
            where += f", field {self.field}"
            if self.value is not None:
                shown = self.value
                if len(shown) > _MAX_SHOWN_VALUE:
                    shown = shown[:_MAX_SHOWN_VALUE] + "..."
                where += f"={shown!r}"
        reason = self.reason.rstrip(".")
        return f"{where}: {reason}. The file was not loaded; {self.advice}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (keyword-only arguments)
        return (
            _rebuild_error,
            (self.reason, self.source_name, self.line_number, self.field, self.value, self.advice),
        )


def _rebuild_error(
    reason: str,
    source_name: str,
    line_number: int | None,
    field: str | None,
    value: str | None,
    advice: str | None,
) -> AnswerFileError:
    return AnswerFileError(
        reason, source_name=source_name, line_number=line_number, field=field, value=value, advice=advice
    )


_DEFAULT_ADVICE = (
    "keep the file for inspection and check it against the answer-file layout "
    f"(layout {LAYOUT_VERSION}, {_LAYOUT_DOC}); if Skatteverket's file description differs, correct "
    "LAYOUT in airflow_provider_skattekonto/domain/answer_file.py"
)
_TRUNCATED_ADVICE = (
    "the file looks incomplete (truncated download or a file still being written): download it again, "
    "and if it stays incomplete ask Skatteverket for a new delivery"
)
_CUT_LINE_ADVICE = (
    "if this is the file's last line, the file is truncated: download it again; otherwise " + _DEFAULT_ADVICE
)
_VERSION_ADVICE = (
    "this provider reads layout versions "
    + ", ".join(sorted(SUPPORTED_LAYOUT_VERSIONS))
    + ": upgrade the provider or adapt LAYOUT in airflow_provider_skattekonto/domain/answer_file.py"
)


class _FieldError(ValueError):
    """Internal: one field's value is invalid (the parser adds file, line and field)."""


# ---------------------------------------------------------------------------------------------------
# Field kinds: how one field is parsed from and formatted to text
# ---------------------------------------------------------------------------------------------------
_MAX_AMOUNT_DIGITS = 18  # öre: fits a signed 64-bit integer (SQL BIGINT) with room for sums


def parse_amount(text: str) -> int:
    """Parse a Swedish-style amount (``-12345,00``, ``350,50``, Unicode minus U+2212 accepted) to öre.

    Exactly two decimals after a decimal comma, digits only, no thousands separators, no plus sign.
    Raises :class:`ValueError` naming the problem.
    """
    if len(text) >= 4 and text[-3] == ",":
        whole = text[:-3]
        sign = whole[0]
        negative = sign == "-" or sign == "\u2212"
        if negative:
            whole = whole[1:]
        digits = whole + text[-2:]
        # isdigit() alone admits non-ASCII digits that int() would accept: require ASCII too.
        if whole and digits.isdigit() and digits.isascii() and len(digits) <= _MAX_AMOUNT_DIGITS:
            return -int(digits) if negative else int(digits)
    raise _FieldError(_amount_problem(text))


def _amount_problem(text: str) -> str:
    if not text:
        return "amount is empty"
    if sum(char.isdigit() for char in text) > _MAX_AMOUNT_DIGITS:
        return f"amount has more than {_MAX_AMOUNT_DIGITS} digits (the model stores öre in a 64-bit integer)"
    if "." in text and "," not in text:
        return "amount must use a decimal comma, not a point (e.g. -12345,00)"
    if " " in text or "\u00a0" in text or "." in text or text.count(",") > 1:
        return "amount must not contain thousands separators (e.g. -12345,00)"
    if "," not in text or len(text) < 4 or text[-3] != ",":
        return "amount must have exactly two decimals after a decimal comma (e.g. -12345,00 or 350,50)"
    return "amount must be an optional minus sign, digits, a decimal comma and two digits (e.g. -12345,00)"


def format_amount(ore: int) -> str:
    """Format öre as the file writes amounts: ``-12345,00``, ``0,00``, ``350,50``."""
    if ore < 0:
        kronor, cents = divmod(-ore, 100)
        return f"-{kronor},{cents:02d}"
    kronor, cents = divmod(ore, 100)
    return f"{kronor},{cents:02d}"


_DATE_CACHE: dict[str, dt.date] = {}
_DATE_CACHE_MAX = 8192


def _parse_date(text: str) -> dt.date:
    cached = _DATE_CACHE.get(text)
    if cached is not None:
        return cached
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not text.isascii():
        raise _FieldError("date must be written YYYY-MM-DD (e.g. 2026-11-30)")
    try:
        value = dt.date.fromisoformat(text)
    except ValueError as exc:
        raise _FieldError(f"not a valid date ({exc})") from None
    if len(_DATE_CACHE) < _DATE_CACHE_MAX:
        _DATE_CACHE[text] = value
    return value


def _parse_timestamp(text: str) -> dt.datetime:
    if len(text) < 19 or text[10] != "T" or not text.isascii():
        raise _FieldError("timestamp must be ISO 8601 with a UTC offset (e.g. 2026-11-30T06:12:00+01:00)")
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise _FieldError(f"not a valid ISO 8601 timestamp ({exc})") from None
    if value.tzinfo is None:
        raise _FieldError("timestamp has no UTC offset; expected e.g. 2026-11-30T06:12:00+01:00")
    return value


def _format_timestamp(value: dt.datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value.isoformat()} must be timezone-aware")
    return value.isoformat()


def _parse_principal(text: str) -> str:
    if len(text) != 12 or not text.isdigit() or not text.isascii():
        raise _FieldError(
            "principal id must be 12 digits without separators (16 + organisation number, or century + personnummer)"
        )
    try:
        return normalize_principal_id(text)
    except InvalidIdentifierError as exc:
        raise _FieldError(str(exc)) from None


def _format_principal(value: str) -> str:
    return normalize_principal_id(value)


def _parse_orderer(text: str) -> str:
    if len(text) != 12 or not text.startswith("16") or not text.isdigit() or not text.isascii():
        raise _FieldError("orderer must be 12 digits: 16 + the organisation number, without separators")
    try:
        return normalize_organisation_number(text)
    except InvalidIdentifierError as exc:
        raise _FieldError(str(exc)) from None


def _format_orderer(value: str) -> str:
    return "16" + normalize_organisation_number(value)


def _parse_text(text: str) -> str:
    if not text:
        raise _FieldError("must not be empty")
    if "\n" in text or "\r" in text:
        raise _FieldError("must not contain line breaks")
    return text


def _format_text(value: str) -> str:
    if not value:
        raise ValueError("a text field must not be empty")
    if "\n" in value or "\r" in value:
        raise ValueError(f"text {value!r} contains a line break, which the layout does not allow")
    if _CONTROL.search(value):
        raise ValueError(f"text {value!r} contains a control character, which the layout does not allow")
    return value


# Control characters no field may hold: every C0 character and DEL (a line ends in LF or CRLF only).
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_NAMES = {0x00: "NUL", 0x09: "tab", 0x0D: "carriage return without its line feed", 0x1B: "ESC", 0x7F: "DEL"}


class _ControlCharacter(Exception):
    """Internal: a line (without its line end) holds a control character at ``position``."""

    def __init__(self, body: str, position: int) -> None:
        super().__init__(position)
        self.body = body
        self.position = position


class _LineTooLong(Exception):
    """Internal: a line is longer than MAX_LINE_BYTES."""


def _parse_version(text: str) -> str:
    if text not in SUPPORTED_LAYOUT_VERSIONS:
        raise _FieldError(f"unsupported layout version (this provider reads {sorted(SUPPORTED_LAYOUT_VERSIONS)})")
    return text


def _parse_count(text: str) -> int:
    if not text or not text.isdigit() or not text.isascii() or len(text) > 12:
        raise _FieldError("count must be a non-negative whole number (at most 12 digits)")
    return int(text)


class _Kind(NamedTuple):
    parse: Callable[[str], Any]
    format: Callable[[Any], str]


TEXT = _Kind(_parse_text, _format_text)
VERSION = _Kind(_parse_version, str)
ORDERER = _Kind(_parse_orderer, _format_orderer)
PRINCIPAL = _Kind(_parse_principal, _format_principal)
DATE = _Kind(_parse_date, dt.date.isoformat)
TIMESTAMP = _Kind(_parse_timestamp, _format_timestamp)
AMOUNT = _Kind(parse_amount, format_amount)
COUNT = _Kind(_parse_count, str)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One field of a record: its name in the file (as in Skatteverket's API), the model attribute, its
    kind, and whether it may be empty (empty = ``None`` in the model)."""

    name: str
    attribute: str
    kind: _Kind
    optional: bool = False


# ---------------------------------------------------------------------------------------------------
# THE LAYOUT. Record type -> (model class, fields after the record-type field, in file order).
# A Transaction's ``sequence`` is not in the file: it is the 1-based position within its block.
# ---------------------------------------------------------------------------------------------------
LAYOUT: dict[str, tuple[type, tuple[FieldSpec, ...]]] = {
    "H": (
        FileHeader,
        (
            FieldSpec("layoutversion", "layout_version", VERSION),
            FieldSpec("bestallareId", "orderer", ORDERER),
            FieldSpec("skapad", "created_at", TIMESTAMP),
            FieldSpec("filidentitet", "file_id", TEXT),
        ),
    ),
    "S": (
        Balance,
        (
            FieldSpec("huvudmanId", "principal", PRINCIPAL),
            FieldSpec("avstamningsdatum", "reconciled_on", DATE),
            FieldSpec("saldoSkatteverket", "balance_skatteverket_ore", AMOUNT),
            FieldSpec("saldoKronofogden", "balance_kronofogden_ore", AMOUNT, optional=True),
            FieldSpec("rantaSkatteverket", "interest_skatteverket_ore", AMOUNT, optional=True),
            FieldSpec("senastUppdaterad", "last_updated", TIMESTAMP),
            FieldSpec("nastaAvstamningsdatum", "next_reconciliation_on", DATE, optional=True),
        ),
    ),
    "T": (
        Transaction,
        (
            FieldSpec("huvudmanId", "principal", PRINCIPAL),
            FieldSpec("transaktionsidentitet", "transaction_id", TEXT, optional=True),
            FieldSpec("transaktionsdatum", "transaction_date", DATE),
            FieldSpec("ranteberakningsdatum", "interest_date", DATE, optional=True),
            FieldSpec("transaktionstext", "text", TEXT),
            FieldSpec("beloppSkatteverket", "amount_skatteverket_ore", AMOUNT, optional=True),
            FieldSpec("beloppKronofogden", "amount_kronofogden_ore", AMOUNT, optional=True),
        ),
    ),
    "E": (
        FileTrailer,
        (
            FieldSpec("antalHuvudman", "principal_count", COUNT),
            FieldSpec("antalTransaktioner", "transaction_count", COUNT),
            FieldSpec("kontrollsumma", "amount_sum_ore", AMOUNT),
        ),
    ),
}
HEADER, BALANCE, TRANSACTION, TRAILER = "H", "S", "T", "E"
RECORD_TYPE_FIELD = "posttyp"


# ---------------------------------------------------------------------------------------------------
# Compiled form of the layout (derived once at import; checked against the record model)
# ---------------------------------------------------------------------------------------------------
class _Compiled(NamedTuple):
    cls: type
    specs: tuple[FieldSpec, ...]
    width: int  # number of fields including the record type
    parsers: tuple[Callable[[str], Any], ...]
    optional: tuple[bool, ...]
    order: tuple[int, ...] | None  # model positional order -> file field index; None = identical
    attributes: tuple[str, ...]


def _compile(record_type: str) -> _Compiled:
    cls, specs = LAYOUT[record_type]
    model_fields = [f.name for f in dataclasses.fields(cls) if f.name != "sequence"]
    attributes = tuple(s.attribute for s in specs)
    if sorted(model_fields) != sorted(attributes):
        raise RuntimeError(f"LAYOUT[{record_type!r}] does not cover the fields of {cls.__name__}")
    order = tuple(attributes.index(name) for name in model_fields)
    return _Compiled(
        cls=cls,
        specs=specs,
        width=len(specs) + 1,
        parsers=tuple(s.kind.parse for s in specs),
        optional=tuple(s.optional for s in specs),
        order=None if order == tuple(range(len(order))) else order,
        attributes=attributes,
    )


_COMPILED = {record_type: _compile(record_type) for record_type in LAYOUT}
_T = _COMPILED[TRANSACTION]


def _check_transaction_fast_path() -> None:
    """The parser and writer handle T records with code written out for speed; make sure it matches."""
    expected = [
        ("principal", PRINCIPAL, False),
        ("transaction_id", TEXT, True),
        ("transaction_date", DATE, False),
        ("interest_date", DATE, True),
        ("text", TEXT, False),
        ("amount_skatteverket_ore", AMOUNT, True),
        ("amount_kronofogden_ore", AMOUNT, True),
    ]
    actual = [(s.attribute, s.kind, s.optional) for s in _T.specs]
    model = [f.name for f in dataclasses.fields(Transaction)]
    if actual != expected or model[:2] != ["principal", "sequence"] or _T.order is not None:
        raise RuntimeError(
            "LAYOUT['T'] changed: update the transaction fast paths in _parse_lines and write_answer_file"
        )


_check_transaction_fast_path()
_S_NAMES = {spec.attribute: spec.name for spec in _COMPILED[BALANCE].specs}
_BALANCE_WIDTH = _COMPILED[BALANCE].width


def _balance(row: list[str]) -> Balance | None:
    """An S record's fields (record type included) as the ``Balance`` that ``_build`` makes of them, or
    ``None`` where ``_build`` fails: written out for LAYOUT["S"] (checked at import, below)."""
    if len(row) != _BALANCE_WIDTH:
        return None
    _, principal, reconciled_on, amount_s, amount_k, interest, updated, following = row
    try:
        return Balance(
            _parse_principal(principal),
            _parse_date(reconciled_on),
            parse_amount(amount_s),
            parse_amount(amount_k) if amount_k else None,
            parse_amount(interest) if interest else None,
            _parse_timestamp(updated),
            _parse_date(following) if following else None,
        )
    except ValueError:  # _FieldError included
        return None


def _check_balance_fast_path() -> None:
    expected = [
        ("principal", PRINCIPAL, False),
        ("reconciled_on", DATE, False),
        ("balance_skatteverket_ore", AMOUNT, False),
        ("balance_kronofogden_ore", AMOUNT, True),
        ("interest_skatteverket_ore", AMOUNT, True),
        ("last_updated", TIMESTAMP, False),
        ("next_reconciliation_on", DATE, True),
    ]
    compiled = _COMPILED[BALANCE]
    if [(s.attribute, s.kind, s.optional) for s in compiled.specs] != expected or compiled.order is not None:
        raise RuntimeError("LAYOUT['S'] changed: update _balance, the balance fast path of _fast")


_check_balance_fast_path()


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
class _IterableReader(io.RawIOBase):
    """A readable raw stream over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            try:
                self._pending = memoryview(bytes(next(self._chunks))).cast("B")
            except StopIteration:
                return 0
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]  # a view: a large chunk is not copied again per read
        return size


_TEXT_MODE_HINT = "parse_answer_file reads bytes: open the file in binary mode ('rb')"


def _binary_stream(chunks: BinaryIO | IO[bytes] | Iterable[bytes]) -> IO[bytes]:
    if isinstance(chunks, (io.TextIOBase, str)):
        raise TypeError(_TEXT_MODE_HINT)
    if hasattr(chunks, "read"):
        stream: Any = chunks
        if not hasattr(stream, "read1") or not hasattr(stream, "readable"):
            stream = io.BufferedReader(_ReadAdapter(stream), buffer_size=_READ_CHUNK)
        return stream  # type: ignore[no-any-return]
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(chunks))
    return io.BufferedReader(_IterableReader(chunks), buffer_size=_READ_CHUNK)


class _ReadAdapter(io.RawIOBase):
    """A raw stream over any object with ``read(n)`` (e.g. a minimal file-like object)."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


_BOM = codecs.BOM_UTF8


def _first_line(stream: IO[bytes]) -> str | None:
    """The first line, decoded, without a leading UTF-8 BOM (``None``: empty file or only a BOM)."""
    first = stream.readline(MAX_LINE_BYTES + 1)
    if not isinstance(first, bytes):
        raise TypeError(_TEXT_MODE_HINT)
    if not first:
        return None
    if len(first) > MAX_LINE_BYTES:
        raise _LineTooLong
    if first.startswith(_BOM):
        first = first[len(_BOM) :]
        if not first:  # nothing but a BOM
            return None
    return first.decode(ENCODING)


def parse_answer_file(chunks: BinaryIO | IO[bytes] | Iterable[bytes], *, source_name: str) -> Iterator[Record]:
    """Parse an answer file, streaming; yield ``FileHeader``, then per principal its ``Balance`` followed
    by its ``Transaction`` records, and ``FileTrailer`` last.

    ``chunks`` is a binary file object or any iterable of byte chunks (e.g. an HTTP body). Memory stays
    flat in the file size (only the set of principal ids is kept). Raises :class:`AnswerFileError`
    (naming ``source_name``, the line, the field and the value) on the first problem: the stream is
    all-or-nothing, and the file is valid only once the trailer has been yielded. The caller's file object
    is not closed.
    """
    # Smaller steps than for batches: the Transaction objects of a whole step are alive at once.
    for item in _parse(chunks, source_name, _SEGMENT // 4):
        if type(item) is TransactionBatch:
            yield from item.transactions()
        else:
            yield item  # type: ignore[misc]


def parse_answer_batches(
    chunks: BinaryIO | IO[bytes] | Iterable[bytes], *, source_name: str
) -> Iterator[Record | TransactionBatch]:
    """:func:`parse_answer_file` for bulk consumers: runs of transactions come as
    :class:`~airflow_provider_skattekonto.domain.records.TransactionBatch` (columns of validated text)
    instead of one ``Transaction`` per row; single ``Transaction`` records may come too.

    Same validation, same errors, same order. The bulk of a file goes through a fast path that checks
    whole regions of lines with string operations that run in C (no per-row Python objects); a region
    it cannot vouch for (quoting, control characters, a record type other than S or T, any invalid value)
    is parsed line by line by the same code as before, which names the problem.
    """
    return _parse(chunks, source_name, _SEGMENT)


def _parse(
    chunks: BinaryIO | IO[bytes] | Iterable[bytes], source_name: str, segment: int
) -> Iterator[Record | TransactionBatch]:
    stream = _binary_stream(chunks)
    state = _State()
    try:
        first = _first_line(stream)
    except UnicodeDecodeError as exc:
        raise AnswerFileError(
            f"the file is not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)",
            source_name=source_name,
            line_number=1,
        ) from None
    except _LineTooLong:
        raise _too_long(source_name, 1) from None
    rest = _bounded_lines(stream)  # the per-line path's view of what follows
    if first is None:
        yield from _parse_lines(iter(()), source_name, state)
        return
    yield from _parse_lines(itertools.chain((first,), rest), source_name, state, stop_line=1)
    # read1: at most one read from the source, so the end of the stream (where VerifiedChunks checks the
    # sha256) is reached only once the lines before it, trailer included, are parsed.
    read = getattr(stream, "read1", stream.read)
    while not state.done:
        data = read(segment)
        if not data:
            yield from _parse_lines(rest, source_name, state, first_line=state.line + 1)  # raises: no trailer
            return
        follow = rest
        if not data.endswith(b"\n"):
            tail = stream.readline(MAX_LINE_BYTES + 1)
            end = data.rfind(b"\n") + 1
            if len(data) - end + len(tail) > MAX_LINE_BYTES:
                # The lines before the long one first (an earlier problem is reported first); a trailer
                # among them reads on into the long line (nothing may follow a trailer) and fails there.
                data, follow = data[:end], _too_long_next()
            else:
                data += tail
        if data:
            yield from _block(data, state, source_name, follow)
        if follow is not rest:
            raise _too_long(source_name, state.line + 1)


def _block(data: bytes, state: _State, source_name: str, rest: Iterator[str]) -> Iterator[Record | TransactionBatch]:
    """Whole lines of the file (the last line may lack its end), then ``rest``: the fast path where it
    can vouch for the lines, else the per-line path."""
    end = data.rfind(b"\n") + 1
    if end:
        fast = _fast(data if end == len(data) else data[:end], state)
        if fast is not None:
            yield from fast
            if end == len(data):
                return
            data = data[end:]  # the file's last line, without a line end: the per-line path
    try:
        text = data.decode(ENCODING)
    except UnicodeDecodeError:  # the per-line path names the line
        lines = map(bytes.decode, io.BytesIO(data))
        count = data.count(b"\n") + (not data.endswith(b"\n"))
        yield from _parse_lines(
            itertools.chain(lines, rest),
            source_name,
            state,
            first_line=state.line + 1,
            stop_line=state.line + count,
        )
        return
    yield from _segment(text, state, source_name, rest)


def _bounded_lines(stream: IO[bytes]) -> Iterator[str]:
    """The stream's lines, decoded; a line longer than MAX_LINE_BYTES raises before it is read whole."""
    readline = stream.readline
    while line := readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES:
            raise _LineTooLong
        yield line.decode(ENCODING)


def _too_long_next() -> Iterator[str]:
    """Lines that follow a region when the next line is too long: reading on fails at once."""
    raise _LineTooLong
    yield  # pragma: no cover - a generator that fails when first read


_TOO_LONG_REASON = (
    f"line longer than {MAX_LINE_BYTES:,} bytes (a record is one short line; this is not an answer file "
    "of this layout, or it is damaged); the line was not read"
)


def _too_long(source_name: str, line_number: int) -> AnswerFileError:
    return AnswerFileError(_TOO_LONG_REASON, source_name=source_name, line_number=line_number)


def _screened(lines: Iterable[str]) -> Iterator[str]:
    """The per-line path's lines, refusing a control character anywhere but in the line end (CRLF or LF)."""
    search = _CONTROL.search
    for line in lines:
        if search(line) is not None:
            body = line[:-1] if line.endswith("\n") else line
            if body.endswith("\r"):
                body = body[:-1]
            found = search(body)
            if found is not None:
                raise _ControlCharacter(body, found.start())
        yield line


def _control_error(body: str, position: int, fail: Callable[..., AnswerFileError], line_number: int) -> AnswerFileError:
    """The error for a control character at ``position`` of a line: names the field and shows its value."""
    index = start = 0
    end = len(body)
    quoted = False
    for at, char in enumerate(body):
        if char == '"':
            quoted = not quoted
        elif char == DELIMITER and not quoted:
            if at > position:
                end = at
                break
            index += 1
            start = at + 1
    raw = body[start:end]
    value = raw[1:-1].replace('""', '"') if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    kind = body.split(DELIMITER, 1)[0]
    specs = _COMPILED[kind].specs if kind in _COMPILED else ()
    names = [RECORD_TYPE_FIELD, *(spec.name for spec in specs)]
    field = names[index] if index < len(names) else f"field {index + 1}"
    char = body[position]
    code = ord(char)
    name = _CONTROL_NAMES.get(code)
    return fail(
        f"control character U+{code:04X}{f' ({name})' if name else ''} at character {value.find(char) + 1} of "
        "the value; no field may hold a control character (U+0000-U+001F, U+007F), and a line ends only in "
        "CRLF or LF",
        field=field,
        value=value,
        line_number=line_number,
    )


_SEGMENT = 1 << 16  # bytes read per step of the fast path (then completed to a whole line)
# What the fast path leaves to the per-line path: control characters (other than the line ends).
_CONTROL_BYTES = bytes(c for c in [*range(0x20), 0x7F] if c not in b"\r\n")
_FEED_AND_CONTROL_BYTES = _CONTROL_BYTES + b"\n"
_AMOUNT_CHARS = b"0123456789,;-"
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TOO_MANY_DIGITS = b"0" * 17  # more than 16 before the decimal comma (parse_amount allows 18 in all)


def _amounts_ok(joined: str, present: int) -> bool:
    """Whether every ';'-separated element of ``joined`` is empty or, but for where a minus stands,
    an amount as parse_amount accepts it with an ASCII minus (``-?[0-9]{1,16},[0-9]{2}``); ``present``
    is the number of non-empty elements. The caller reads each element, its comma removed, with int(),
    which refuses a minus anywhere but at the start (and a lone minus).

    Counting instead of matching each element: with every digit mapped to 0, each non-empty element has
    exactly one comma, preceded by a digit and followed by exactly two digits and the element's end."""
    data = joined.encode()
    if data.translate(None, _AMOUNT_CHARS):
        return False
    data = data.translate(_DIGITS_AS_ZERO)
    return (
        data.count(b",") == present
        and data.count(b"0,00;") + data.endswith(b"0,00") == present
        and _TOO_MANY_DIGITS not in data
    )


_STRIDE = 8  # fields of an S or T record


class _State:
    """Where a parse stands; shared by the fast path and the per-line path."""

    __slots__ = ("amount_sum", "done", "line", "principal", "seen", "sequence", "transaction_count")

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # principal -> line of its balance record
        self.principal = ""  # the current block's principal ("" before the first balance)
        self.sequence = 0
        self.transaction_count = 0
        self.amount_sum = 0
        self.line = 0  # lines consumed so far
        self.done = False  # the trailer was read and checked


def _lines(text: str) -> list[str]:
    """Lines as iterating the bytes gives them: split after each LF only, line ends kept."""
    lines = [line + "\n" for line in text.split("\n")]
    last = lines.pop()
    if last != "\n":
        lines.append(last[:-1])
    return lines


def _segment(text: str, state: _State, source_name: str, rest: Iterator[str]) -> Iterator[Record | TransactionBatch]:
    """Decoded text of whole lines (the file's last line may lack its end) for the per-line path."""
    end = text.rfind("\n") + 1
    if end:
        yield from _slow(text[:end], text, end, state, source_name, rest)
    if end < len(text) and not state.done:  # a last line without a line end
        yield from _slow(text[end:], text, len(text), state, source_name, rest)


def _slow(
    region: str, text: str, after: int, state: _State, source_name: str, rest: Iterator[str]
) -> Iterator[Record | TransactionBatch]:
    """The per-line path over ``region``; it reads on into ``text[after:]`` and ``rest`` only for a
    record spanning lines (an error), after which it parses to the end."""

    def following() -> Iterator[str]:
        yield from _lines(text[after:])
        yield from rest

    lines = _lines(region)
    yield from _parse_lines(
        itertools.chain(lines, following()),
        source_name,
        state,
        first_line=state.line + 1,
        stop_line=state.line + len(lines),
    )


_PLACEHOLDER = "Q"  # the record type of a quoted line until its csv-parsed fields replace it


def _unquote(text: str, end: str) -> tuple[str, list[list[str]]] | None:
    """Replace each line of ``text`` (as :func:`_fast` marks it: ``;`` before the line end ``end``) that
    contains a quote by a placeholder line of 8 empty fields but the first, :data:`_PLACEHOLDER`; return
    the text and, per such line in order, its fields (csv, as the per-line path reads them). ``None``: a
    quoted line is not one record."""
    pieces: list[str] = []
    bodies: list[str] = []
    marker = ";" + end
    placeholder = _PLACEHOLDER + ";" * _STRIDE + end
    pos = 0
    find, rfind = text.find, text.rfind
    while (quote := find('"', pos)) >= 0:
        start = rfind("\n", 0, quote) + 1
        stop = find("\n", quote) + 1
        body_end = stop - len(marker)
        body = text[start:body_end]
        if text[body_end:stop] != marker or "\r" in body:
            return None
        pieces.append(text[pos:start])
        pieces.append(placeholder)
        bodies.append(body)
        pos = stop
    pieces.append(text[pos:])
    try:
        rows = list(csv.reader(bodies, delimiter=DELIMITER, quotechar='"', strict=True))
    except csv.Error:
        return None
    if len(rows) != len(bodies):  # a quoted field ran into the next line
        return None
    return "".join(pieces), rows


def _fast(data: bytes, state: _State) -> list[Record | TransactionBatch] | None:
    """Parse whole lines of S and T records in one go, or return ``None`` (state unchanged) when anything
    is unusual (control characters included), so that the per-line path handles (and names) it. ``data``
    is whole lines (it ends in a line feed).

    A ``;`` goes before each line end (one ``replace`` on the bytes: a carriage return, or a line feed in
    an LF file), so that one ``split(";")`` makes every line 8 elements, its line end opening the next
    line's record type (``"\\r\\nT"``): the line ends are checked with the record types, and the columns
    are slices of that one list, taken per block of a principal's transactions."""
    # Line feeds and control characters (other than carriage returns) in one pass: as many as the lines
    # found below proves there is no control character and no line feed inside a field.
    feeds = len(data) - len(data.translate(None, _FEED_AND_CONTROL_BYTES))
    marked = data.replace(b"\r", b";\r")
    returns = len(marked) - len(data)
    end = "\r\n"
    if returns != feeds:  # LF line ends (all or some), or a carriage return without its line feed
        if returns:
            if data.count(b"\r\n") != returns:
                return None
            data = data.replace(b"\r\n", b"\n")
        marked = data.replace(b"\n", b";\n")
        end = "\n"
    try:
        text = marked.decode(ENCODING)
    except UnicodeDecodeError:
        return None
    quoted: list[list[str]] = []
    if '"' in text:
        unquoted = _unquote(text, end)
        if unquoted is None:
            return None
        text, quoted = unquoted
    flat = text.split(";")
    stride = _STRIDE
    n = len(flat) // stride
    if len(flat) != stride * n + 1 or flat[-1] != end or feeds != n:
        return None
    flat[0] = end + flat[0]
    kinds = flat[0:-1:stride]
    if quoted:
        placeholder = end + _PLACEHOLDER
        if kinds.count(placeholder) != len(quoted):  # a line of that record type was there before
            return None
        index = -1
        for row in quoted:
            if len(row) != stride:
                return None
            index = kinds.index(placeholder, index + 1)
            kinds[index] = row[0] = end + row[0]
            flat[stride * index : stride * index + stride] = row
    # Lines 2..n start with ``end`` + their record type (checked below with the record types), and the
    # last ends with ``end`` alone: n line ends, each "\r\n" whole. With n line feeds and control
    # characters (``feeds``) and, in a CRLF file, n carriage returns in all, no other element holds a line
    # end or a control character, and every line has 8 fields.
    s_kind = end + BALANCE
    # -- balances: parsed one by one; the transactions between them form the batches
    items: list[Balance | tuple[str, int, int, int]] = []  # balances and (principal, sequence, from, to)
    seen = state.seen
    new: dict[str, int] = {}
    first = state.line + 1
    principal, sequence = state.principal, state.sequence
    previous = 0
    while previous < n:
        try:
            bound = kinds.index(s_kind, previous)
        except ValueError:
            bound = n
        if bound > previous:  # transactions [previous, bound) of the current principal
            items.append((principal, sequence + 1, previous, bound))
            sequence += bound - previous
        if bound == n:
            break
        balance = _balance(flat[stride * bound : stride * bound + stride])
        if balance is None:
            return None
        principal = balance.principal
        nxt = balance.next_reconciliation_on
        if principal in seen or principal in new or (nxt is not None and nxt <= balance.reconciled_on):
            return None
        new[principal] = first + bound
        items.append(balance)
        sequence = 0
        previous = bound + 1
    if kinds.count(end + TRANSACTION) + len(new) != n:  # all lines but the balances are transactions
        return None
    # -- transactions: every check on whole columns of each block
    columns: list[tuple[list[str], ...]] = []
    amounts: list[str] = []
    present = 0
    used: set[str] = set()  # transaction dates
    interest_used: set[str] = set()
    for item in items:
        if type(item) is Balance:
            continue
        owner, _, lo, hi = item  # type: ignore[misc]
        lo, hi = stride * lo, stride * hi
        size = (hi - lo) // stride
        if not owner or flat[lo + 1 : hi : stride].count(owner) != size:
            return None
        days, texts = flat[lo + 3 : hi : stride], flat[lo + 5 : hi : stride]
        amounts_s, amounts_k = flat[lo + 6 : hi : stride], flat[lo + 7 : hi : stride]
        empty_s = amounts_s.count("")
        # a row without beloppSkatteverket needs beloppKronofogden
        if "" in texts or (empty_s and not all(itertools.compress(amounts_k, map(operator.not_, amounts_s)))):
            return None
        interest = flat[lo + 4 : hi : stride]
        used.update(days)
        interest_used.update(interest)
        joined_s, joined_k = ";".join(amounts_s), ";".join(amounts_k)
        amounts.append(joined_s)
        amounts.append(joined_k)
        present += 2 * size - empty_s - amounts_k.count("")
        columns.append((flat[lo + 2 : hi : stride], days, interest, texts))
    if "" in used:  # an empty transaction date
        return None
    used.update(interest_used)
    used.discard("")
    if not _DATE_CACHE.keys() >= used:
        for day in used.difference(_DATE_CACHE):
            try:
                _parse_date(day)
            except _FieldError:
                return None
    if not _amounts_ok(";".join(amounts), present):
        return None
    # -- the records, in file order
    out: list[Record | TransactionBatch] = []
    count = amount_sum = 0
    batch = 0
    for item in items:
        if type(item) is Balance:
            out.append(item)
            continue
        owner, first_sequence, lo, hi = item  # type: ignore[misc]
        tids, days, interest, texts = columns[batch]
        ore_s = amounts[2 * batch].replace(",", "").split(";")
        ore_k = amounts[2 * batch + 1].replace(",", "").split(";")
        batch += 1
        try:  # int() completes _amounts_ok: a minus only at the start
            total = sum(map(int, filter(None, ore_s))) + sum(map(int, filter(None, ore_k)))
        except ValueError:
            return None
        out.append(TransactionBatch(owner, first_sequence, tids, days, interest, texts, ore_s, ore_k, total))
        count += hi - lo
        amount_sum += total
    seen.update(new)
    state.principal, state.sequence = principal, sequence
    state.transaction_count += count
    state.amount_sum += amount_sum
    state.line += n
    return out


class _LineCounter:
    """A csv reader whose ``line_num`` counts the file's lines from ``offset`` on."""

    __slots__ = ("offset", "reader")

    def __init__(self, reader: Any, offset: int) -> None:
        self.reader = reader
        self.offset = offset

    def __iter__(self) -> Iterator[list[str]]:
        return self.reader  # type: ignore[no-any-return]

    @property
    def line_num(self) -> int:
        return self.offset + self.reader.line_num  # type: ignore[no-any-return]


def _parse_lines(
    lines: Iterator[str], source_name: str, state: _State, *, first_line: int = 1, stop_line: int | None = None
) -> Iterator[Record]:
    """The per-line path, from the file's line ``first_line`` (1: the header): parse records until the
    line ``stop_line`` is consumed at a record boundary (then save the state and return), or to the end."""
    reader = _LineCounter(csv.reader(_screened(lines), delimiter=DELIMITER, quotechar='"', strict=True), first_line - 1)
    line = 0
    stop = -1 if stop_line is None else stop_line

    def fail(reason: str, *, field: str | None = None, value: str | None = None, **kw: Any) -> AnswerFileError:
        return AnswerFileError(
            reason,
            source_name=source_name,
            line_number=kw.get("line_number", line),
            field=field,
            value=value,
            advice=kw.get("advice"),
        )

    rows = _rows(reader, fail)

    # -- header -----------------------------------------------------------------------------------
    if first_line == 1:
        first = next(rows, None)
        line = reader.line_num
        if first is None:
            raise fail("the file is empty: no header record", line_number=None, advice=_TRUNCATED_ADVICE)
        if not first or first[0] != HEADER:
            raise fail(
                f"the file must start with a header record ({HEADER}); found record type "
                f"{(first[0] if first else '')!r}",
                field=RECORD_TYPE_FIELD,
                value=first[0] if first else "",
            )
        if len(first) > 1 and first[1] not in SUPPORTED_LAYOUT_VERSIONS:
            spec = _COMPILED[HEADER].specs[0]
            raise fail("unsupported layout version", field=spec.name, value=first[1], advice=_VERSION_ADVICE)
        header = _build(first, _COMPILED[HEADER], fail)
        yield header
        if reader.line_num == stop:
            state.line = stop
            return

    # -- body ---------------------------------------------------------------------------------------
    seen = state.seen
    principal = state.principal
    sequence = state.sequence
    transaction_count = state.transaction_count
    amount_sum = state.amount_sum
    t_width = _T.width
    date_get = _DATE_CACHE.get
    parse_date = _parse_date
    amount = parse_amount
    new_transaction = Transaction
    next_line = reader.line_num + 1  # a record spanning lines has a line break inside a quoted field

    def save() -> None:
        state.principal, state.sequence = principal, sequence
        state.transaction_count, state.amount_sum = transaction_count, amount_sum
        state.line = stop

    for row in rows:
        kind = row[0] if row else ""
        if kind == TRANSACTION:
            # Fast path, written out for LAYOUT["T"] (checked at import by _check_transaction_fast_path).
            # ``principal`` is "" before the first balance: a row's empty principal must not match it.
            if len(row) != t_width or row[1] != principal or not principal or reader.line_num != next_line:
                line = next_line  # where the record starts
                _row_problem(row, principal, seen, next_line, fail)
            next_line += 1
            try:
                transaction_id = row[2] or None
                text = row[5]
                if not text:
                    raise _FieldError("empty text")
                transaction_date = date_get(row[3]) or parse_date(row[3])
                interest_date = (date_get(row[4]) or parse_date(row[4])) if row[4] else None
                amount_s = amount(row[6]) if row[6] else None
                amount_k = amount(row[7]) if row[7] else None
            except _FieldError as exc:
                line = reader.line_num
                _build(row, _T, fail)  # slow path: names the failing field
                raise fail(str(exc)) from None  # pragma: no cover - _build raises first
            if amount_s is None:
                if amount_k is None:
                    line = reader.line_num
                    raise fail(
                        "a transaction needs at least one of beloppSkatteverket and beloppKronofogden",
                        field=_T.specs[-2].name,
                        value="",
                    )
                amount_sum += amount_k
            elif amount_k is None:
                amount_sum += amount_s
            else:
                amount_sum += amount_s + amount_k
            sequence += 1
            transaction_count += 1
            yield new_transaction(
                principal, sequence, transaction_id, transaction_date, interest_date, text, amount_s, amount_k
            )
            if reader.line_num == stop:
                save()
                return
            continue
        if reader.line_num != next_line:
            line = next_line
            _row_problem(row, principal, seen, next_line, fail)
        next_line += 1
        line = reader.line_num
        if kind == BALANCE:
            balance = _build(row, _COMPILED[BALANCE], fail)
            assert isinstance(balance, Balance)
            if balance.principal in seen:
                raise fail(
                    f"a second block for this principal, whose block started on line {seen[balance.principal]} "
                    "(each principal appears in one block only)",
                    field=_S_NAMES["principal"],
                    value=row[1],
                )
            if balance.next_reconciliation_on is not None and balance.next_reconciliation_on <= (balance.reconciled_on):
                raise fail(
                    f"the next reconciliation date must be after {_S_NAMES['reconciled_on']} "
                    f"({balance.reconciled_on.isoformat()})",
                    field=_S_NAMES["next_reconciliation_on"],
                    value=balance.next_reconciliation_on.isoformat(),
                )
            seen[balance.principal] = line
            principal = balance.principal
            sequence = 0
            yield balance
            if reader.line_num == stop:
                save()
                return
            continue
        if kind == TRAILER:
            trailer = _build(row, _COMPILED[TRAILER], fail)
            assert isinstance(trailer, FileTrailer)
            names = [s.name for s in _COMPILED[TRAILER].specs]
            for name, expected, actual, shown in (
                (names[0], len(seen), trailer.principal_count, row[1]),
                (names[1], transaction_count, trailer.transaction_count, row[2]),
                (names[2], amount_sum, trailer.amount_sum_ore, row[3]),
            ):
                if expected != actual:
                    found = format_amount(expected) if name == names[2] else str(expected)
                    raise fail(
                        f"the trailer says {shown} but the file holds {found}",
                        field=name,
                        value=shown,
                        advice=_TRUNCATED_ADVICE if expected < actual else None,
                    )
            _expect_end(rows, reader, fail)
            state.done = True
            yield trailer
            return
        if kind == HEADER:
            raise fail("a second header record", field=RECORD_TYPE_FIELD, value=kind)
        if not row:
            raise fail("empty line inside the file")
        raise fail(f"unknown record type (expected one of {', '.join(LAYOUT)})", field=RECORD_TYPE_FIELD, value=kind)

    raise fail(
        f"the file ends without a trailer record ({TRAILER}) after line {reader.line_num}",
        line_number=None,
        advice=_TRUNCATED_ADVICE,
    )


def _rows(reader: Any, fail: Callable[..., AnswerFileError]) -> Iterator[list[str]]:
    """csv rows, with decoding and quoting problems turned into AnswerFileError."""
    try:
        yield from reader
    except UnicodeDecodeError as exc:
        raise fail(
            f"the file is not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)",
            line_number=reader.line_num + 1,
        ) from None
    except csv.Error as exc:
        raise fail(f"malformed quoting or field separators ({exc})", line_number=reader.line_num) from None
    except _LineTooLong:
        raise fail(_TOO_LONG_REASON, line_number=reader.line_num + 1) from None
    except _ControlCharacter as exc:
        raise _control_error(exc.body, exc.position, fail, reader.line_num + 1) from None


def _expect_end(rows: Iterator[list[str]], reader: Any, fail: Callable[..., AnswerFileError]) -> None:
    for row in rows:
        if any(value.strip() for value in row):
            raise fail(
                "a record after the trailer record (the trailer must be last)",
                field=RECORD_TYPE_FIELD,
                value=row[0],
                line_number=reader.line_num,
            )


def _build(row: list[str], compiled: _Compiled, fail: Callable[..., Exception]) -> Any:
    if len(row) != compiled.width:
        _wrong_width(row, compiled, fail)
    values: list[Any] = []
    for spec, value in zip(compiled.specs, row[1:], strict=True):
        if not value and spec.optional:
            values.append(None)
            continue
        try:
            values.append(spec.kind.parse(value))
        except (ValueError, _FieldError) as exc:
            raise fail(str(exc), field=spec.name, value=value) from None
    if compiled.order is not None:
        values = [values[i] for i in compiled.order]
    return compiled.cls(*values)


def _wrong_width(row: list[str], compiled: _Compiled, fail: Callable[..., Exception]) -> None:
    names = [RECORD_TYPE_FIELD, *(s.name for s in compiled.specs)]
    too_few = len(row) < compiled.width
    raise fail(
        f"record type {row[0]} must have {compiled.width} fields ({';'.join(names)}), found {len(row)}"
        + (" (is the file cut off here?)" if too_few else " (is a text with ';' missing its quotes?)"),
        field=RECORD_TYPE_FIELD,
        value=row[0],
        advice=_CUT_LINE_ADVICE if too_few else None,
    )


def _row_problem(
    row: list[str], principal: str, seen: dict[str, int], expected_line: int, fail: Callable[..., AnswerFileError]
) -> None:
    """Raise the error for a row that failed the cheap checks (line span, width, block principal)."""
    specs = _COMPILED[row[0]].specs if row and row[0] in _COMPILED else ()
    names = [RECORD_TYPE_FIELD, *(spec.name for spec in specs)]
    for index, value in enumerate(row):
        if "\n" in value or "\r" in value:
            raise fail(
                f"a line break inside a quoted field (the record starts on line {expected_line}); "
                "a record must be one line",
                field=names[index] if index < len(names) else f"field {index + 1}",
                value=value,
            )
    if not row or row[0] != TRANSACTION:  # pragma: no cover - only multi-line records get here
        raise fail(f"a record spanning several lines (it starts on line {expected_line})")
    if len(row) != _T.width:
        _wrong_width(row, _T, fail)
    name = _T.specs[0].name
    value = row[1]
    if not principal:
        raise fail(
            "a transaction before any balance record (each block starts with its principal's S record)",
            field=name,
            value=value,
        )
    try:
        other = _parse_principal(value)
    except _FieldError as exc:
        raise fail(str(exc), field=name, value=value) from None
    if other == principal:  # pragma: no cover - equal after normalisation means the text differed
        raise fail("principal id not written as in the block's balance record", field=name, value=value)
    where = f"whose block started on line {seen[other]}" if other in seen else "which has no balance record before it"
    raise fail(
        f"a transaction for another principal than the current block's ({principal}), {where}",
        field=name,
        value=value,
    )


# ---------------------------------------------------------------------------------------------------
# Blocks (optional helper for consumers)
# ---------------------------------------------------------------------------------------------------
class Block(NamedTuple):
    """One principal's balance and its transactions, in file order."""

    balance: Balance
    transactions: list[Transaction]


def iter_blocks(records: Iterable[Record]) -> Iterator[FileHeader | Block | FileTrailer]:
    """Group a record stream into ``FileHeader``, one :class:`Block` per principal, ``FileTrailer``.

    Memory is one block at a time. As with :func:`parse_answer_file`, the file is valid only once the
    ``FileTrailer`` is yielded.
    """
    current: Block | None = None
    for record in records:
        if isinstance(record, Transaction):
            if current is None or record.principal != current.balance.principal:
                raise ValueError(f"transaction for {record.principal} outside its principal's block")
            current.transactions.append(record)
            continue
        if current is not None:
            yield current
            current = None
        if isinstance(record, Balance):
            current = Block(record, [])
        else:
            yield record
    if current is not None:
        yield current


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def _formatted(record: Any, compiled: _Compiled) -> list[str]:
    out = []
    for spec in compiled.specs:
        value = getattr(record, spec.attribute)
        if value is None:
            if not spec.optional:
                raise ValueError(f"{spec.name} ({spec.attribute}) is required in {type(record).__name__}")
            out.append("")
        else:
            out.append(spec.kind.format(value))
    return out


def write_answer_file(
    out: BinaryIO | IO[bytes],
    header: FileHeader,
    blocks: Iterable[tuple[Balance, Iterable[Transaction]]],
) -> FileTrailer:
    """Write an answer file to ``out`` (binary): the header, each principal's block, and the trailer.

    Streams (one record at a time); computes and returns the trailer. Transactions must belong to their
    block's principal and carry ``sequence`` 1, 2, ... in order; a principal may appear once. ``out`` is
    flushed, not closed. Raises :class:`ValueError` on a record the layout cannot represent.
    """
    if header.layout_version not in SUPPORTED_LAYOUT_VERSIONS:
        raise ValueError(f"cannot write layout version {header.layout_version!r}")
    text = io.TextIOWrapper(out, encoding=ENCODING, newline="")  # type: ignore[arg-type]
    try:
        writer = csv.writer(text, delimiter=DELIMITER, quotechar='"', lineterminator=LINE_TERMINATOR)
        writerow = writer.writerow
        writerow([HEADER, *_formatted(header, _COMPILED[HEADER])])
        seen: set[str] = set()
        transaction_count = 0
        amount_sum = 0
        compiled_s = _COMPILED[BALANCE]
        fmt_amount = format_amount
        fmt_date = dt.date.isoformat
        control = _CONTROL.search
        for balance, transactions in blocks:
            principal = normalize_principal_id(balance.principal)
            if principal != balance.principal:
                raise ValueError(f"balance principal {balance.principal!r} must be 12 digits ({principal})")
            if principal in seen:
                raise ValueError(f"principal {principal} has more than one block")
            seen.add(principal)
            writerow([BALANCE, *_formatted(balance, compiled_s)])
            expected = 0
            for t in transactions:
                expected += 1
                if t.principal != principal or t.sequence != expected:
                    raise ValueError(
                        f"transaction {t!r} in the block of {principal} must have principal {principal} "
                        f"and sequence {expected}"
                    )
                s_ore = t.amount_skatteverket_ore
                k_ore = t.amount_kronofogden_ore
                if s_ore is None and k_ore is None:
                    raise ValueError(f"transaction {t!r} has neither amount")
                text_value = t.text
                if not text_value or "\n" in text_value or "\r" in text_value:
                    raise ValueError(f"transaction {t!r} needs a one-line, non-empty text")
                if control(text_value) or (t.transaction_id and control(t.transaction_id)):
                    raise ValueError(f"transaction {t!r} holds a control character, which the layout does not allow")
                amount_sum += (s_ore or 0) + (k_ore or 0)
                interest = t.interest_date
                writerow(
                    (
                        TRANSACTION,
                        principal,
                        t.transaction_id or "",
                        fmt_date(t.transaction_date),
                        "" if interest is None else fmt_date(interest),
                        text_value,
                        "" if s_ore is None else fmt_amount(s_ore),
                        "" if k_ore is None else fmt_amount(k_ore),
                    )
                )
            transaction_count += expected
        trailer = FileTrailer(principal_count=len(seen), transaction_count=transaction_count, amount_sum_ore=amount_sum)
        writerow([TRAILER, *_formatted(trailer, _COMPILED[TRAILER])])
        text.flush()
    finally:
        text.detach()
    return trailer


# Layout self-check: the writer's transaction fast path above writes the T fields in LAYOUT order.
if [s.attribute for s in _T.specs] != [
    "principal",
    "transaction_id",
    "transaction_date",
    "interest_date",
    "text",
    "amount_skatteverket_ore",
    "amount_kronofogden_ore",
]:
    raise RuntimeError("update write_answer_file's transaction fast path to the changed LAYOUT['T']")
