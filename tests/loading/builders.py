"""Build answer-file record streams (and files) for the loading tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from airflow_provider_skattekonto.domain.identifiers import luhn_check_digit
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Record, Transaction

STOCKHOLM_WINTER = dt.timezone(dt.timedelta(hours=1))
ORDERER = "5560000167"


def org_principal(n: int) -> str:
    """A valid 12-digit principal id (16 + organisation number) for ``n``."""
    body = f"5560{n:05d}"
    return "16" + body + luhn_check_digit(body)


@dataclass
class Block:
    principal: str
    reconciled_on: dt.date
    balance_ore: int
    transactions: list[tuple[dt.date, str, int | None, int | None, str | None]] = field(default_factory=list)
    # (transaction_date, text, amount_skatteverket_ore, amount_kronofogden_ore, transaction_id)


def header(file_id: str, created_at: dt.datetime, orderer: str = ORDERER) -> FileHeader:
    return FileHeader(layout_version="1.0", orderer=orderer, created_at=created_at, file_id=file_id)


def records(head: FileHeader, blocks: Sequence[Block]) -> Iterator[Record]:
    """The record stream of a file with ``blocks``, trailer computed."""
    yield head
    count = amount = 0
    for block in blocks:
        yield balance_of(block, head.created_at)
        for tx in transactions_of(block):
            count += 1
            amount += (tx.amount_skatteverket_ore or 0) + (tx.amount_kronofogden_ore or 0)
            yield tx
    yield FileTrailer(principal_count=len(blocks), transaction_count=count, amount_sum_ore=amount)


def transactions_of(block: Block) -> list[Transaction]:
    return [
        Transaction(
            principal=block.principal,
            sequence=seq,
            transaction_id=tid,
            transaction_date=date,
            interest_date=date,
            text=text,
            amount_skatteverket_ore=sv,
            amount_kronofogden_ore=kf,
        )
        for seq, (date, text, sv, kf, tid) in enumerate(block.transactions, start=1)
    ]


def balance_of(block: Block, created_at: dt.datetime) -> Balance:
    return Balance(
        principal=block.principal,
        reconciled_on=block.reconciled_on,
        balance_skatteverket_ore=block.balance_ore,
        balance_kronofogden_ore=None,
        interest_skatteverket_ore=0,
        last_updated=created_at,
        next_reconciliation_on=block.reconciled_on + dt.timedelta(days=35),
    )


def random_blocks(
    n_principals: int, per_principal: int, *, seed: int, reconciled_on: dt.date, start: int = 0
) -> list[Block]:
    """Deterministic blocks with varied amounts, texts (incl. backslashes, COPY's escape character), nulls
    and duplicates. No control characters: an answer file cannot hold them (tabs in texts that reach the
    loader as records are covered in test_snapshot)."""
    rng = random.Random(seed)
    texts = ["Debiterad preliminärskatt", "Inbetalning", "Moms", "Tab\\there", "Back\\slash", 'Ränta; "kv"']
    out = []
    for p in range(start, start + n_principals):
        block = Block(org_principal(p), reconciled_on, rng.randint(-(10**9), 10**9))
        for i in range(per_principal):
            date = reconciled_on + dt.timedelta(days=1 + i % 20)
            sv = rng.choice([None, rng.randint(-(10**8), 10**8)])
            kf = rng.randint(-(10**6), 10**6) if sv is None or rng.random() < 0.1 else None
            tid = None if rng.random() < 0.3 else f"T{p}-{i}"
            block.transactions.append((date, rng.choice(texts), sv, kf, tid))
        out.append(block)
    return out


def fake_sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def file_bytes(head: FileHeader, blocks: Sequence[Block]) -> bytes:
    """The answer file for ``blocks`` as bytes, through the real writer."""
    from airflow_provider_skattekonto.domain.answer_file import write_answer_file

    pairs = ((balance_of(block, head.created_at), transactions_of(block)) for block in blocks)
    out = io.BytesIO()
    write_answer_file(out, head, pairs)
    return out.getvalue()


def at(day: int, hour: int = 6) -> dt.datetime:
    """A creation time on 2026-03-<day> at <hour>:00 Stockholm (winter)."""
    return dt.datetime(2026, 3, day, hour, tzinfo=STOCKHOLM_WINTER)
