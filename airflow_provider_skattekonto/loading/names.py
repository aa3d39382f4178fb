"""Names of the warehouse tables, validated against SQL injection. Light: DAG files import this."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from airflow_provider_skattekonto.exceptions import SkattekontoError

__all__ = [
    "BALANCE_COLUMNS",
    "DEFAULT_PREFIX",
    "DIALECTS",
    "TRANSACTION_COLUMNS",
    "Dialect",
    "SnapshotLoadError",
    "TableNames",
    "qualified_name",
    "table_names",
]

Dialect = Literal["sqlite", "postgresql", "generic"]
DIALECTS: tuple[str, ...] = ("sqlite", "postgresql", "generic")
DEFAULT_PREFIX = "skattekonto_"

# Columns the loaders write (and the staged files carry), in table order.
TRANSACTION_COLUMNS = (
    "orderer",
    "principal",
    "reconciled_on",
    "file_id",
    "sequence_no",
    "transaction_id",
    "transaction_date",
    "interest_date",
    "transaction_text",
    "amount_skatteverket_ore",
    "amount_kronofogden_ore",
)
BALANCE_COLUMNS = (
    "orderer",
    "principal",
    "reconciled_on",
    "file_id",
    "balance_skatteverket_ore",
    "balance_kronofogden_ore",
    "interest_skatteverket_ore",
    "last_updated",
    "next_reconciliation_on",
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_PREFIX = 40  # longest table name must stay under PostgreSQL's 63-byte identifier limit


class SnapshotLoadError(SkattekontoError, ValueError):
    """The records cannot be loaded as a file snapshot (structure, counts, arguments or tables)."""


def _check_dialect(dialect: str) -> Dialect:
    if dialect not in DIALECTS:
        raise SnapshotLoadError(f"Unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}.")
    return dialect  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- names


@dataclass(frozen=True, slots=True)
class TableNames:
    """Quoted, optionally schema-qualified names of the three tables."""

    files: str
    balances: str
    transactions: str


def _validate_identifier(value: str, what: str, max_length: int) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or len(value) > max_length:
        raise SnapshotLoadError(
            f"Invalid {what} {value!r}: use only ASCII letters, digits and underscores, start with a letter "
            f"or underscore, at most {max_length} characters (it becomes part of SQL identifiers)."
        )
    return value


def table_names(prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> TableNames:
    """The quoted table names for ``prefix`` (validated against SQL injection) in ``schema``."""
    _validate_identifier(prefix, "table prefix", _MAX_PREFIX)
    qualifier = ""
    if schema is not None:
        qualifier = f'"{_validate_identifier(schema, "schema name", 63)}".'
    return TableNames(
        files=f'{qualifier}"{prefix}files"',
        balances=f'{qualifier}"{prefix}balances"',
        transactions=f'{qualifier}"{prefix}transactions"',
    )


def qualified_name(prefix: str, schema: str | None, suffix: str) -> str:
    """The quoted, optionally schema-qualified name ``<prefix><suffix>`` of any other warehouse object
    (change-feed tables, views); ``prefix`` and ``schema`` are validated like in :func:`table_names`."""
    _validate_identifier(prefix, "table prefix", _MAX_PREFIX)
    _validate_identifier(suffix, "object name", 63 - _MAX_PREFIX)
    if schema is None:
        return f'"{prefix}{suffix}"'
    return f'"{_validate_identifier(schema, "schema name", 63)}"."{prefix}{suffix}"'
