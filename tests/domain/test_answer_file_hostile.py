"""Hostile answer files on disk: control characters in fields, lines without a sane length, and
transactions outside a principal's block.

Every case is a real file in ``tmp_path``, read in binary mode as the loader reads it, through both entry
points (``parse_answer_file``: records; ``parse_answer_batches``: what the loader uses, whose fast path
hands suspicious regions to the per-line path).
"""

from __future__ import annotations

import dataclasses
import io
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.answer_file import (
    MAX_LINE_BYTES,
    AnswerFileError,
    parse_amount,
    parse_answer_batches,
    parse_answer_file,
    write_answer_file,
)
from airflow_provider_skattekonto.domain.records import FileTrailer, Transaction

from .test_answer_file import COMPANY, GOOD, HEADER, NAME, T1, T2, balance, lines, tx

PARSERS: dict[str, Callable[..., Iterator[Any]]] = {"records": parse_answer_file, "batches": parse_answer_batches}

# A long valid block ahead of the damaged line puts it deep inside a fast-path region of the file.
FILLER_ROWS = 3000


def _filler() -> list[str]:
    return [T2] * FILLER_ROWS


def _file(tmp_path: Path, body: list[str], *, deep: bool) -> tuple[Path, int]:
    """A file of GOOD's records with ``body`` as its transactions of COMPANY; returns the path and the
    line offset of ``body``'s first line."""
    filler = _filler() if deep else []
    rows = [GOOD[0], GOOD[1], *filler, *body]
    count = len(filler) + len(body)
    total = sum(_ore(row) for row in [*filler, *body])
    sign = "-" if total < 0 else ""
    trailer = f"E;1;{count};{sign}{abs(total) // 100},{abs(total) % 100:02d}"
    path = tmp_path / NAME
    path.write_bytes(("\r\n".join([*rows, trailer]) + "\r\n").encode())
    return path, 3 + len(filler)


def _ore(row: str) -> int:
    fields = row.split(";")
    try:
        return sum(parse_amount(value) for value in fields[6:8] if value)
    except ValueError:
        return 0  # a damaged row: the file fails before its trailer


def _parse_path(parser: str, path: Path) -> list[Any]:
    with path.open("rb") as stream:
        return list(PARSERS[parser](stream, source_name=path.name))


CONTROL_CASES = [
    # (id, line as written, field, value the error shows)
    ("nul-in-text", T2.replace("Intäktsränta", "Intäkts\x00ränta"), "transaktionstext", "Intäkts\x00ränta"),
    ("esc-in-text", T2.replace("Intäktsränta", "\x1b[2JIntäktsränta"), "transaktionstext", "\x1b[2JIntäktsränta"),
    ("lone-cr-in-text", T2.replace("Intäktsränta", "Intäkts\rränta"), "transaktionstext", "Intäkts\rränta"),
    (
        "lone-cr-in-quoted-text",
        T2.replace("Intäktsränta", '"Intäkts\rränta; ""x"""'),
        "transaktionstext",
        'Intäkts\rränta; "x"',
    ),
    ("del-in-text", T2.replace("Intäktsränta", "Intäkts\x7fränta"), "transaktionstext", "Intäkts\x7fränta"),
    ("tab-in-text", T2.replace("Intäktsränta", "Intäkts\tränta"), "transaktionstext", "Intäkts\tränta"),
    ("nul-in-transaction-id", T1.replace("100000000001", "1000\x0000001"), "transaktionsidentitet", "1000\x0000001"),
    ("bel-in-amount", T2.replace("0,50", "0,5\x07"), "beloppSkatteverket", "0,5\x07"),
    ("nul-as-record-type", "\x00" + T2, "posttyp", "\x00T"),
]


@pytest.mark.parametrize("deep", [False, True], ids=["near-the-start", "deep-in-the-file"])
@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize(("row", "field", "value"), [c[1:] for c in CONTROL_CASES], ids=[c[0] for c in CONTROL_CASES])
def test_a_control_character_in_a_field_is_refused_naming_line_and_field(
    tmp_path: Path, parser: str, deep: bool, row: str, field: str, value: str
) -> None:
    path, first = _file(tmp_path, [T1, row, T2], deep=deep)
    with pytest.raises(AnswerFileError) as caught:
        _parse_path(parser, path)
    error = caught.value
    message = str(error)
    assert (error.source_name, error.line_number, error.field, error.value) == (NAME, first + 1, field, value), message
    assert message.startswith(f"{NAME} line {first + 1}, field {field}={value!r}: control character U+"), message
    assert "The file was not loaded; " in message


def test_the_same_file_without_the_control_character_is_valid(tmp_path: Path) -> None:
    path, _ = _file(tmp_path, [T1, T2, T2], deep=True)
    for parser in PARSERS:
        assert isinstance(_parse_path(parser, path)[-1], FileTrailer)


def test_a_control_character_in_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(lines((0, GOOD[0].replace("F-0001", "F-00\x1b01"))))
    for parser in PARSERS:
        with pytest.raises(AnswerFileError) as caught:
            _parse_path(parser, path)
        assert (caught.value.line_number, caught.value.field, caught.value.value) == (1, "filidentitet", "F-00\x1b01")


def test_control_characters_after_the_trailer_are_refused(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(lines() + b"\x00\x00\x00\x00")  # e.g. a preallocated file padded with NUL bytes
    for parser in PARSERS:
        with pytest.raises(AnswerFileError, match=f"{NAME} line 8, field posttyp=.*control character U\\+0000"):
            _parse_path(parser, path)


def test_a_crlf_line_end_and_a_file_cut_after_its_cr_are_not_control_characters(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(lines()[:-1])  # ends in "\r" after the trailer
    for parser in PARSERS:
        assert isinstance(_parse_path(parser, path)[-1], FileTrailer)


# -- transactions outside a block ------------------------------------------------------------------------
BEFORE_ANY_S = "a transaction before any balance record (each block starts with its principal's S record)"
EMPTY_PRINCIPAL_T = T2.replace(COMPANY, "")


def _records_and_error(parser: str, path: Path) -> tuple[list[Any], AnswerFileError | None]:
    """What a parser yields before it raises, and the error (``None``: the file was accepted)."""
    records: list[Any] = []
    with path.open("rb") as stream:
        try:
            for record in PARSERS[parser](stream, source_name=path.name):
                records.append(record)
        except AnswerFileError as exc:
            return records, exc
    return records, None


@pytest.mark.parametrize("deep", [False, True], ids=["small-file", "large-file"])
@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("principal", ["", COMPANY], ids=["empty-principal", "a-principal"])
def test_a_transaction_before_any_balance_record_is_refused(
    tmp_path: Path, parser: str, deep: bool, principal: str
) -> None:
    row = T2.replace(COMPANY, principal)
    # Trailer counts that match the rows, so only the record order is wrong.
    body = [GOOD[0], row, *((GOOD[1], *_filler()) if deep else ())]
    count = 1 + FILLER_ROWS * deep
    trailer = f"E;{int(deep)};{count};{count * 50 // 100},{count * 50 % 100:02d}"  # T2 is 0,50
    path = tmp_path / NAME
    path.write_bytes(("\r\n".join([*body, trailer]) + "\r\n").encode())
    records, error = _records_and_error(parser, path)
    assert error is not None, f"accepted: {records[1:3]}"
    assert (error.source_name, error.line_number, error.field, error.value) == (NAME, 2, "huvudmanId", principal)
    assert str(error).startswith(f"{NAME} line 2, field huvudmanId={principal!r}: {BEFORE_ANY_S}. "), str(error)
    assert records == [HEADER]


@pytest.mark.parametrize("deep", [False, True], ids=["near-the-start", "deep-in-the-file"])
@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_a_transaction_with_an_empty_principal_inside_a_block_is_refused(
    tmp_path: Path, parser: str, deep: bool
) -> None:
    path, first = _file(tmp_path, [T1, EMPTY_PRINCIPAL_T, T2], deep=deep)
    records, error = _records_and_error(parser, path)
    assert error is not None, "accepted"
    assert (error.line_number, error.field, error.value) == (first + 1, "huvudmanId", "")
    assert str(error).startswith(f"{NAME} line {first + 1}, field huvudmanId='': principal id must be 12 digits")
    assert all(getattr(record, "principal", COMPANY) == COMPANY for record in records)


# -- the line limit -------------------------------------------------------------------------------------
def _peak_parsing(parser: str, path: Path) -> tuple[AnswerFileError | None, int]:
    tracemalloc.start()
    try:
        try:
            _parse_path(parser, path)
            error = None
        except AnswerFileError as exc:
            error = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return error, peak


def _write_big(path: Path, head: bytes, filler: bytes, size: int, tail: bytes = b"") -> None:
    with path.open("wb") as out:
        out.write(head)
        block = filler * max(1, (1 << 20) // len(filler))
        written = len(head)
        while written < size:
            out.write(block)
            written += len(block)
        out.write(tail)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_a_25_mib_file_without_a_line_end_is_refused_with_flat_memory(tmp_path: Path, parser: str) -> None:
    path = tmp_path / NAME
    _write_big(path, GOOD[0].encode() + b";", b"x" * 4096, 25 << 20)
    error, peak = _peak_parsing(parser, path)
    assert error is not None and error.line_number == 1 and error.field is None
    assert str(error).startswith(f"{NAME} line 1: line longer than {MAX_LINE_BYTES:,} bytes"), str(error)
    assert peak < 1 << 20, peak  # the line is never held whole (before: ~190 MiB)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_one_huge_field_deep_in_the_file_is_refused_with_flat_memory(tmp_path: Path, parser: str) -> None:
    path = tmp_path / NAME
    head = ("\r\n".join([GOOD[0], GOOD[1], *_filler()]) + "\r\n").encode()
    huge_line_start = f"T;{COMPANY};;2026-11-11;;".encode()
    _write_big(path, head + huge_line_start, b"A" * 4096, 25 << 20, b";0,50;\r\nE;1;1;0,50\r\n")
    error, peak = _peak_parsing(parser, path)
    assert error is not None and error.line_number == 3 + FILLER_ROWS, str(error)
    assert "line longer than" in str(error) and error.source_name == NAME
    assert peak < 2 << 20, peak


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_a_long_line_after_the_trailer_is_refused_before_the_trailer_is_yielded(tmp_path: Path, parser: str) -> None:
    path = tmp_path / NAME
    path.write_bytes(lines() + b"x" * (MAX_LINE_BYTES + 10))
    with path.open("rb") as stream:
        records = PARSERS[parser](stream, source_name=NAME)
        with pytest.raises(AnswerFileError, match=f"{NAME} line 8: line longer than"):
            for record in records:
                assert not isinstance(record, FileTrailer)


@pytest.mark.parametrize("deep", [False, True], ids=["near-the-start", "deep-in-the-file"])
@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_the_limit_is_exactly_max_line_bytes_with_the_line_end(tmp_path: Path, parser: str, deep: bool) -> None:
    short = T2.replace("Intäktsränta", "Ränta")
    room = MAX_LINE_BYTES - len(short.encode()) - 2  # CRLF
    longest = short.replace("Ränta", "Ränta" + "x" * room)
    assert len(longest.encode()) + 2 == MAX_LINE_BYTES
    path, _ = _file(tmp_path, [longest], deep=deep)
    records = _parse_path(parser, path)
    assert isinstance(records[-1], FileTrailer)
    path, first = _file(tmp_path, [longest.replace("Ränta", "Ränta!")], deep=deep)
    with pytest.raises(AnswerFileError) as caught:
        _parse_path(parser, path)
    assert caught.value.line_number == first and "line longer than 65,536 bytes" in str(caught.value)


def test_an_http_body_in_one_huge_chunk_is_read_in_bounded_steps(tmp_path: Path) -> None:
    body = lines() + b"x" * (8 << 20)  # one 8 MiB "line" after the trailer, in one chunk
    with pytest.raises(AnswerFileError, match="line 8: line longer than"):
        list(parse_answer_batches(iter([body]), source_name=NAME))


@pytest.mark.parametrize(
    "transaction",
    [
        tx(COMPANY, 1, text="Moms\x00 2609"),
        tx(COMPANY, 1, text="\x1b[31mMoms"),
        dataclasses.replace(tx(COMPANY, 1), transaction_id="1\x7f"),
    ],
    ids=["nul-in-text", "esc-in-text", "del-in-transaction-id"],
)
def test_the_writer_refuses_what_the_parser_refuses(transaction: Transaction) -> None:
    with pytest.raises(ValueError, match="control character"):
        write_answer_file(io.BytesIO(), HEADER, [(balance(), [transaction])])
    with pytest.raises(ValueError, match="control character"):
        write_answer_file(io.BytesIO(), dataclasses.replace(HEADER, file_id="F\x00"), [])
