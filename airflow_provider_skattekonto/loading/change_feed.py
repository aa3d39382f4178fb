"""The change feed: in which file each transaction first appeared, and in which file it disappeared.

No Airflow import. Two tables beside the three snapshot tables (``docs/warehouse-schema.md``):

* ``<prefix>transaction_feed``: one row per *appearance* of a transaction in a principal's
  reconciliation period: the row's identity, its content as first seen, the file (and delivery morning)
  it first appeared in, and the file it disappeared in (NULL while it is still in the stored snapshot).
  Indexed by ``first_file_id`` and ``gone_file_id``: "what is new in file X" and "what disappeared in
  file X" are index lookups.
* ``<prefix>balance_history``: every balance snapshot written, numbered per key
  (``snapshot_no`` 1, 2, ... within one ``(orderer, principal, reconciled_on)``), for the balance
  continuity check and the "turned negative" view.

**Identity of a transaction across snapshots** (of one principal and reconciliation period):

* a booked row is identified by its ``transaktionsidentitet`` and its occurrence among rows with the
  same identity in the snapshot (``B<id>#1``, ``B<id>#2`` for exactly repeated rows);
* a row not yet booked (no identity) is identified by its content (transaction date, interest date,
  amounts, text) and its occurrence among identical unbooked rows (``U<date>|<interest date>|<sv>|<kf>|<text>#n``).
  When such a row changes, is booked (gets an identity) or vanishes, the feed records the old row as
  *gone* and, if it is still there in another form, the new form as *new*, both in that file.

The feed is written set-based, in the load's transaction, after the snapshot rows are in place. The rows
of a loaded key with present feed rows (a replaced snapshot) are staged with their identities in a
scratch table; present feed rows whose identity is no longer there are marked gone, identities not yet
present are inserted as new. The rows of a key without present feed rows (a principal new in the file)
are all new: they go into the feed in one statement. The occurrence number is a window function over the
snapshot sorted by identity key, which costs a sort of every row; the loader tells which snapshots have a
repeated identity key and the occurrence numbers there (:class:`Occurrences`, while the rows stream): the
identities are computed without the window function and its sort.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from airflow_provider_skattekonto.loading.names import TRANSACTION_COLUMNS, TableNames, qualified_name, table_names

if TYPE_CHECKING:
    from airflow_provider_skattekonto.domain.records import Transaction, TransactionBatch

__all__ = [
    "FeedCounts",
    "FeedNames",
    "Occurrences",
    "feed_ddl_statements",
    "feed_names",
    "identity_sql",
    "record_changes",
]

Execute = Callable[[str, Sequence[Any]], Any]

_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {"key": "TEXT", "ident": "TEXT", "text": "TEXT", "date": "TEXT", "ts": "TEXT", "int": "INTEGER"},
    "postgresql": {
        "key": "TEXT",
        "ident": "TEXT",
        "text": "TEXT",
        "date": "DATE",
        "ts": "TIMESTAMPTZ",
        "int": "INTEGER",
        "big": "BIGINT",
    },
    "generic": {
        "key": "VARCHAR(64)",
        "ident": "VARCHAR(1100)",
        "text": "VARCHAR(1000)",
        "date": "DATE",
        "ts": "VARCHAR(32)",
        "int": "INTEGER",
        "big": "BIGINT",
    },
}
_TYPES["sqlite"]["big"] = "INTEGER"

# a transaction's content: its stored columns after the snapshot key (orderer, principal, reconciled_on, file_id)
_CONTENT_COLUMNS = TRANSACTION_COLUMNS[TRANSACTION_COLUMNS.index("sequence_no") :]


@dataclass(frozen=True, slots=True)
class FeedNames:
    """Quoted names of the change-feed tables and their indexes (index names unqualified)."""

    tables: TableNames
    feed: str
    history: str
    scratch: str  # generic dialect only: a permanent scratch table (sqlite/postgresql use a temporary one)
    occurrences: str  # generic dialect only, likewise: the occurrence numbers other than 1
    prefix: str
    schema: str | None


def feed_names(prefix: str, schema: str | None = None) -> FeedNames:
    """The change-feed names for a table prefix and schema (validated)."""
    return FeedNames(
        tables=table_names(prefix, schema),
        feed=qualified_name(prefix, schema, "transaction_feed"),
        history=qualified_name(prefix, schema, "balance_history"),
        scratch=qualified_name(prefix, schema, "feed_scratch"),
        occurrences=qualified_name(prefix, schema, "feed_occurrences"),
        prefix=prefix,
        schema=schema,
    )


def _index(dialect: str, n: FeedNames, name: str, table: str, columns: str, where: str = "") -> str:
    """``CREATE INDEX`` in the dialect's syntax for an index named ``<prefix><name>`` on ``table``; ``where``:
    a partial index's condition (SQLite and PostgreSQL; a full index elsewhere)."""
    index = f'"{n.prefix}{name}"'
    partial = f" WHERE {where}" if where and dialect in ("sqlite", "postgresql") else ""
    if dialect == "sqlite" and n.schema is not None:  # SQLite qualifies the index, not the table
        return f'CREATE INDEX "{n.schema}".{index} ON "{n.prefix}{table}" ({columns}){partial}'
    return f"CREATE INDEX {index} ON {qualified_name(n.prefix, n.schema, table)} ({columns}){partial}"


def feed_ddl_statements(*, dialect: str, prefix: str, schema: str | None = None) -> list[tuple[str, list[str]]]:
    """``(CREATE TABLE, [CREATE INDEX, ...])`` for the change-feed tables, without ``IF NOT EXISTS``."""
    t = _TYPES[dialect]
    n = feed_names(prefix, schema)
    content = _content_ddl(t)
    feed = f"""CREATE TABLE {n.feed} (
    orderer {t["key"]} NOT NULL,
    principal {t["key"]} NOT NULL,
    reconciled_on {t["date"]} NOT NULL,
    identity {t["ident"]} NOT NULL,
    first_file_id {t["key"]} NOT NULL,
    first_delivery_morning {t["ts"]},
    gone_file_id {t["key"]},
    gone_delivery_morning {t["ts"]},
{content}
)"""
    history = f"""CREATE TABLE {n.history} (
    orderer {t["key"]} NOT NULL,
    principal {t["key"]} NOT NULL,
    reconciled_on {t["date"]} NOT NULL,
    snapshot_no {t["int"]} NOT NULL,
    file_id {t["key"]} NOT NULL,
    delivery_morning {t["ts"]},
    balance_skatteverket_ore {t["big"]} NOT NULL,
    balance_kronofogden_ore {t["big"]},
    interest_skatteverket_ore {t["big"]},
    last_updated {t["ts"]} NOT NULL,
    PRIMARY KEY (orderer, principal, reconciled_on, snapshot_no)
)"""
    out = [
        (
            feed,
            [
                # SQLite answers "is this identity present" by index lookups; PostgreSQL hash-joins (and
                # keeps long transaction texts out of a B-tree key)
                _index(
                    dialect,
                    n,
                    "transaction_feed_key",
                    "transaction_feed",
                    "orderer, reconciled_on, principal" + (", identity" if dialect == "sqlite" else ""),
                ),
                _index(dialect, n, "transaction_feed_first", "transaction_feed", "first_file_id"),
                # only gone rows: a load adds no entry for the rows it inserts
                _index(
                    dialect, n, "transaction_feed_gone", "transaction_feed", "gone_file_id", "gone_file_id IS NOT NULL"
                ),
            ],
        ),
        (history, [_index(dialect, n, "balance_history_file", "balance_history", "file_id")]),
    ]
    if dialect == "generic":
        out.append((_scratch_ddl(dialect, n.scratch), [_index(dialect, n, "feed_scratch_key", "feed_scratch", _SK)]))
        out.append((_occurrences_ddl(dialect, n.occurrences), []))
    return out


_SK = "file_id, reconciled_on, principal, identity"


def _content_ddl(t: dict[str, str]) -> str:
    """The column definitions of a transaction's content (``_CONTENT_COLUMNS``), for the feed and the scratch."""
    return f"""    sequence_no {t["int"]} NOT NULL,
    transaction_id {t["key"]},
    transaction_date {t["date"]} NOT NULL,
    interest_date {t["date"]},
    transaction_text {t["text"]} NOT NULL,
    amount_skatteverket_ore {t["big"]},
    amount_kronofogden_ore {t["big"]}"""


def _scratch_ddl(dialect: str, name: str) -> str:
    t = _TYPES[dialect]
    return f"""CREATE TABLE {name} (
    file_id {t["key"]} NOT NULL,
    principal {t["key"]} NOT NULL,
    reconciled_on {t["date"]} NOT NULL,
    identity {t["ident"]} NOT NULL,
{_content_ddl(t)}
)"""


def _occurrences_ddl(dialect: str, name: str) -> str:
    t = _TYPES[dialect]
    return f"""CREATE TABLE {name} (
    file_id {t["key"]} NOT NULL,
    principal {t["key"]} NOT NULL,
    reconciled_on {t["date"]} NOT NULL,
    sequence_no {t["int"]} NOT NULL,
    occurrence {t["int"]} NOT NULL,
    PRIMARY KEY (file_id, principal, reconciled_on, sequence_no)
)"""


# ------------------------------------------------------------------------------------------ identity


def _date_text(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        return column  # stored as ISO text
    if dialect == "postgresql":
        return f"to_char({column}, 'YYYY-MM-DD')"  # independent of the session's DateStyle
    return f"CAST({column} AS VARCHAR(10))"


def identity_key_sql(dialect: str, alias: str = "t") -> str:
    """SQL for a transaction row's identity key, without the occurrence number (see the module doc)."""
    a = alias
    return (
        f"CASE WHEN {a}.transaction_id IS NOT NULL THEN 'B' || {a}.transaction_id"
        f" ELSE 'U' || {_date_text(dialect, f'{a}.transaction_date')}"
        f" || '|' || COALESCE({_date_text(dialect, f'{a}.interest_date')}, '')"
        f" || '|' || COALESCE(CAST({a}.amount_skatteverket_ore AS VARCHAR(20)), '')"
        f" || '|' || COALESCE(CAST({a}.amount_kronofogden_ore AS VARCHAR(20)), '')"
        f" || '|' || {a}.transaction_text END"
    )


def identity_sql(dialect: str, alias: str = "t") -> str:
    """SQL for a transaction row's identity within its snapshot: key ``#`` occurrence (a window function
    over the rows of one ``(orderer, principal, reconciled_on, file_id)``)."""
    key = identity_key_sql(dialect, alias)
    a = alias
    return (
        f"{key} || '#' || CAST(ROW_NUMBER() OVER (PARTITION BY {a}.orderer, {a}.principal, {a}.reconciled_on,"
        f" {a}.file_id, {key} ORDER BY {a}.sequence_no) AS VARCHAR(10))"
    )


def _ore(value: str) -> int | None:
    return int(value) if value else None


class Occurrences:
    """The occurrence numbers of :func:`identity_sql` (``key#n``: the n-th row with that identity key in its
    snapshot, in sequence order), for the rows where ``n`` is not 1, noted while the rows stream.

    Rows are compared by what the key is made of: the transaction id of a booked row, else transaction
    date, interest date, amounts (as integers: the parser's text may carry leading zeros) and text; two
    rows compare equal here exactly when their keys are equal. :meth:`start` at each loaded principal.
    A snapshot's keys are kept until the next :meth:`start` and checked then with one set: only a snapshot
    with a repeated key is numbered row by row.
    """

    __slots__ = ("_done", "_keys", "_runs", "_snapshot")

    def __init__(self) -> None:
        self._done: list[tuple[str, dt.date, int, int]] = []  # of the snapshots before the current one
        self._keys: list[object] = []  # the current snapshot's keys: a booked row's id (str), else a tuple
        self._runs: list[tuple[int, int]] = []  # (first sequence, rows) of the consecutive rows in _keys
        self._snapshot: tuple[str, dt.date] = ("", dt.date.min)

    @property
    def repeats(self) -> list[tuple[str, dt.date, int, int]]:
        """``(principal, reconciled_on, sequence, n)`` of the rows so far whose key is the n-th (n > 1) in
        their snapshot."""
        return self._done + self._numbered()

    def start(self, principal: str, reconciled_on: dt.date) -> None:
        """A loaded snapshot begins."""
        self._done += self._numbered()
        self._keys, self._runs = [], []
        self._snapshot = (principal, reconciled_on)

    def _numbered(self) -> list[tuple[str, dt.date, int, int]]:
        """The current snapshot's rows with an occurrence other than 1, in sequence order."""
        keys = self._keys
        if len(set(keys)) == len(keys):  # no repeat: the common case
            return []
        principal, reconciled_on = self._snapshot
        sequences = [sequence for first, rows in self._runs for sequence in range(first, first + rows)]
        found = []
        for key, total in Counter(keys).items():
            if total > 1:
                at = keys.index(key)
                for n in range(2, total + 1):
                    at = keys.index(key, at + 1)
                    found.append((principal, reconciled_on, sequences[at], n))
        found.sort(key=itemgetter(2))
        return found

    def add(self, tx: Transaction) -> None:
        """One row of the current snapshot."""
        if tx.transaction_id is not None:
            self._keys.append(tx.transaction_id)
        else:  # the same values as add_batch's for the same row (a snapshot may come partly as batches)
            interest = "" if tx.interest_date is None else tx.interest_date.isoformat()
            sv, kf = tx.amount_skatteverket_ore, tx.amount_kronofogden_ore
            self._keys.append((tx.transaction_date.isoformat(), interest, sv, kf, tx.text))
        self._runs.append((tx.sequence, 1))

    def add_batch(self, batch: TransactionBatch) -> None:
        """Rows of the current snapshot, as the parser's columns ('' is absent)."""
        ids = batch.transaction_id
        self._runs.append((batch.first_sequence, len(ids)))
        if all(ids):  # booked rows only: the common case
            self._keys += ids
            return
        keys: list[object] = list(ids)
        at = ids.index("")
        while True:  # an unbooked row's key is its content
            keys[at] = (
                batch.transaction_date[at],
                batch.interest_date[at],
                _ore(batch.amount_skatteverket_ore[at]),
                _ore(batch.amount_kronofogden_ore[at]),
                batch.text[at],
            )
            try:
                at = ids.index("", at + 1)
            except ValueError:
                break
        self._keys += keys


# ----------------------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class FeedCounts:
    """What one load wrote to the change feed."""

    new: int  # transactions that first appeared in this file
    gone: int  # transactions of the replaced snapshots that are not in this file any more
    snapshots: int  # balance snapshots written (= principals loaded)


def _temporary(dialect: str, n: FeedNames, suffix: str, permanent: str) -> str:
    if dialect == "sqlite":
        return f'temp."{n.prefix}{suffix}"'
    if dialect == "postgresql":
        return f'pg_temp."{n.prefix}{suffix}"'
    return permanent


def _prepare_scratch(execute: Execute, dialect: str, n: FeedNames) -> tuple[str, str]:
    """The scratch and occurrences tables (temporary where the dialect has them, created if missing)."""
    scratch = _temporary(dialect, n, "feed_scratch", n.scratch)
    occurrences = _temporary(dialect, n, "feed_occurrences", n.occurrences)
    if dialect == "sqlite":
        for ddl in (_scratch_ddl(dialect, scratch), _occurrences_ddl(dialect, occurrences)):
            execute(ddl.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1), ())
        execute(f'CREATE INDEX IF NOT EXISTS temp."{n.prefix}feed_scratch_key" ON "{n.prefix}feed_scratch" ({_SK})', ())
    elif dialect == "postgresql":
        for ddl in (_scratch_ddl(dialect, scratch), _occurrences_ddl(dialect, occurrences)):
            execute(ddl.replace("CREATE TABLE ", "CREATE TEMPORARY TABLE IF NOT EXISTS ", 1) + " ON COMMIT DROP", ())
    return scratch, occurrences


def _clear_scratch(execute: Execute, dialect: str, tables: tuple[str, ...], file_id: str) -> None:
    """Empty the scratch rows of ``file_id``. The SQLite and PostgreSQL scratch tables are temporary
    (private to the connection) and hold only this load's rows: emptied whole, which both databases do
    without visiting rows (SQLite's truncate optimisation, PostgreSQL's TRUNCATE)."""
    for table in tables:
        if dialect == "sqlite":
            execute(f"DELETE FROM {table}", ())
        elif dialect == "postgresql":
            execute(f"TRUNCATE {table}", ())
        else:
            execute(f"DELETE FROM {table} WHERE file_id = ?", (file_id,))


# Occurrence rows per INSERT statement: 5 values each, within SQLite's oldest limit of 999 per statement.
_NUMBERS_PER_INSERT = 150


def record_changes(
    execute: Execute,
    *,
    dialect: str,
    names: FeedNames,
    orderer: str,
    file_id: str,
    occurrences: Sequence[tuple[str, dt.date, int, int]] = (),
) -> FeedCounts:
    """Write the change feed and the balance history for the keys file ``file_id`` just loaded.

    Call inside the load's transaction, after the file's balance and transaction rows are stored and the
    replaced snapshots deleted, and after the file's row is in the files table. ``occurrences``: the
    loaded rows ``(principal, reconciled_on, sequence_no, n)`` whose identity key is the n-th (n > 1) in
    their snapshot (:class:`Occurrences`); every other row is the first. ``execute(sql, values)`` runs a
    statement written with ``?`` placeholders.
    """
    n = names
    t = n.tables
    scratch, numbers = _prepare_scratch(execute, dialect, n)
    _clear_scratch(execute, dialect, (scratch, numbers), file_id)
    insert_number = f"INSERT INTO {numbers} (file_id, principal, reconciled_on, sequence_no, occurrence) VALUES "
    for start in range(0, len(occurrences), _NUMBERS_PER_INSERT):  # many rows per round trip
        chunk = occurrences[start : start + _NUMBERS_PER_INSERT]
        values: list[Any] = []
        for principal, reconciled_on, sequence, occurrence in chunk:
            period = reconciled_on.isoformat() if dialect == "sqlite" else reconciled_on
            values += (file_id, principal, period, sequence, occurrence)
        execute(insert_number + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)), values)
    # the identity of a row: '#1' in a snapshot without repeated keys; else its occurrence, 1 where not noted
    first = identity_key_sql(dialect) + " || '#1'"
    numbered = f"{identity_key_sql(dialect)} || '#' || CAST(COALESCE(o.occurrence, 1) AS VARCHAR(10))"
    join_numbers = (
        f" LEFT JOIN {numbers} o ON o.file_id = t.file_id AND o.principal = t.principal"
        " AND o.reconciled_on = t.reconciled_on AND o.sequence_no = t.sequence_no"
    )
    content = ", ".join(_CONTENT_COLUMNS)
    t_content = ", ".join(f"t.{c}" for c in _CONTENT_COLUMNS)
    present = (
        f"EXISTS (SELECT 1 FROM {n.feed} f WHERE f.orderer = b.orderer AND f.reconciled_on = b.reconciled_on"
        " AND f.principal = b.principal AND f.gone_file_id IS NULL)"
    )

    def any_key(condition: str) -> bool:
        sql = f"SELECT 1 FROM {t.balances} b WHERE b.orderer = ? AND b.file_id = ? AND {condition}"
        return execute(sql, (orderer, file_id)).fetchone() is not None

    # SQLite and PostgreSQL insert every row as '#1' and then renumber the few noted rows (UPDATE ... FROM,
    # driven by the noted rows); the generic dialect joins the numbers while inserting (portable SQL)
    renumber = bool(occurrences) and dialect != "generic"
    if renumber and dialect == "postgresql":
        # The noted rows' statistics: the renumbering below hash-joins them (_hash_joins), sized by them.
        execute(f"ANALYZE {numbers}", ())

    def insert_rows(into: str, columns: str, select: str, condition: str) -> int | None:
        """The rows of the loaded keys (that meet ``condition``), with their identities; how many (None: the
        driver cannot tell)."""
        identity, join = (numbered, join_numbers) if occurrences and not renumber else (first, "")
        inserted = _rowcount(
            execute(
                f"INSERT INTO {into} ({columns}) SELECT {select.format(identity=identity)}"
                f" FROM {t.balances} b JOIN {t.files} fl ON fl.file_id = b.file_id"
                f" JOIN {t.transactions} t ON t.orderer = b.orderer AND t.principal = b.principal"
                f" AND t.reconciled_on = b.reconciled_on AND t.file_id = b.file_id{join}"
                f" WHERE b.orderer = ? AND b.file_id = ?{condition}",
                (orderer, file_id),
            )
        )
        if renumber:
            own = "t.orderer = ? AND t.first_file_id = o.file_id" if into == n.feed else "t.file_id = o.file_id"
            with _hash_joins(execute, dialect):
                execute(
                    f"UPDATE {into} AS t SET identity = {numbered} FROM {numbers} o"
                    f" WHERE o.file_id = ? AND {own} AND t.reconciled_on = o.reconciled_on"
                    " AND t.principal = o.principal AND t.sequence_no = o.sequence_no",
                    (file_id, orderer) if into == n.feed else (file_id,),
                )
        return inserted

    replaced, fresh = any_key(present), any_key("NOT " + present)
    # what this load wrote, from the statements' row counts (None where the driver cannot tell: counted after)
    new: int | None = 0
    gone: int | None = 0
    if replaced:
        # 1. the current identities of the loaded keys with present feed rows (replaced snapshots)
        insert_rows(
            scratch,
            f"file_id, principal, reconciled_on, identity, {content}",
            f"t.file_id, t.principal, t.reconciled_on, {{identity}}, {t_content}",
            f" AND {present}" if fresh else "",
        )
        gone, new = _compare_snapshots(execute, dialect, n, scratch, orderer, file_id)  # 2. and 3.
    if fresh:
        # 4. the rows of the loaded keys without present feed rows (principals new in the file): all new in it
        new = _add(
            new,
            insert_rows(
                n.feed,
                f"orderer, principal, reconciled_on, identity, first_file_id, first_delivery_morning, {content}",
                f"t.orderer, t.principal, t.reconciled_on, {{identity}}, t.file_id, fl.delivery_morning, {t_content}",
                f" AND NOT {present}" if replaced else "",
            ),
        )
    _clear_scratch(execute, dialect, (scratch, numbers), file_id)
    # 5. the balance snapshots, numbered per key
    snapshots = _rowcount(
        execute(
            f"INSERT INTO {n.history} (orderer, principal, reconciled_on, snapshot_no, file_id, delivery_morning,"
            " balance_skatteverket_ore, balance_kronofogden_ore, interest_skatteverket_ore, last_updated)"
            " SELECT b.orderer, b.principal, b.reconciled_on,"
            f" COALESCE((SELECT MAX(h.snapshot_no) FROM {n.history} h WHERE h.orderer = b.orderer"
            " AND h.principal = b.principal AND h.reconciled_on = b.reconciled_on), 0) + 1,"
            " b.file_id, fl.delivery_morning, b.balance_skatteverket_ore, b.balance_kronofogden_ore,"
            " b.interest_skatteverket_ore, b.last_updated"
            f" FROM {t.balances} b JOIN {t.files} fl ON fl.file_id = b.file_id WHERE b.orderer = ? AND b.file_id = ?",
            (orderer, file_id),
        )
    )
    if new is None:
        new = _count(execute, f"SELECT COUNT(*) FROM {n.feed} WHERE first_file_id = ?", file_id)
    if gone is None:
        gone = _count(execute, f"SELECT COUNT(*) FROM {n.feed} WHERE gone_file_id = ?", file_id)
    if snapshots is None:
        snapshots = _count(execute, f"SELECT COUNT(*) FROM {n.history} WHERE file_id = ?", file_id)
    return FeedCounts(new=new, gone=gone, snapshots=snapshots)


def _rowcount(cursor: Any) -> int | None:
    """The rows a statement wrote, or None if the driver cannot tell (DB-API: -1 or None)."""
    count = getattr(cursor, "rowcount", None)
    return count if isinstance(count, int) and count >= 0 else None


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


@contextmanager
def _hash_joins(execute: Execute, dialect: str) -> Iterator[None]:
    """PostgreSQL: the statements inside are planned without nested loops (hash joins), and without JIT.

    Tables filled in this (or a recent) transaction have no statistics yet: the planner takes them for a handful
    of rows and picks nested loops over them (a renumbering of 2,066 rows of a 208,000-row file took 90 s). These
    are set-based statements over whole snapshots: hash joins. ``enable_nestloop = off`` inflates every plan's
    cost estimate past ``jit_above_cost``: without ``jit = off`` each statement spends ~0.5 s compiling
    expressions it then runs once. The settings are restored when the block ends without an error (after an
    error the transaction is lost anyway, and a statement would hide the error)."""
    if dialect != "postgresql":
        yield
        return
    execute("SET LOCAL enable_nestloop = off", ())
    execute("SET LOCAL jit = off", ())
    yield
    execute("SET LOCAL enable_nestloop = on", ())
    execute("SET LOCAL jit = DEFAULT", ())


def _compare_snapshots(
    execute: Execute, dialect: str, n: FeedNames, scratch: str, orderer: str, file_id: str
) -> tuple[int | None, int | None]:
    """Compare the present feed rows of the replaced snapshots with their new identities (in ``scratch``):
    mark the rows that went as gone, insert the identities not present yet as new; ``(gone, new)`` rows (None:
    the driver cannot tell)."""
    if dialect == "postgresql":
        # The scratch rows' statistics (a fraction of a second): the planner sizes the joins below by them.
        execute(f"ANALYZE {scratch}", ())
    with _hash_joins(execute, dialect):
        return _gone_and_new(execute, n, scratch, orderer, file_id)


def _gone_and_new(
    execute: Execute, n: FeedNames, scratch: str, orderer: str, file_id: str
) -> tuple[int | None, int | None]:
    t = n.tables
    # 2. present rows of the loaded keys whose identity is not in the new snapshot: gone in this file
    gone = _rowcount(
        execute(
            f"UPDATE {n.feed} AS f SET gone_file_id = ?,"
            f" gone_delivery_morning = (SELECT fl.delivery_morning FROM {t.files} fl WHERE fl.file_id = ?)"
            " WHERE f.orderer = ? AND f.gone_file_id IS NULL"
            f" AND f.reconciled_on IN (SELECT DISTINCT r.reconciled_on FROM {t.balances} r"
            " WHERE r.orderer = ? AND r.file_id = ?)"
            f" AND EXISTS (SELECT 1 FROM {t.balances} b WHERE b.orderer = f.orderer AND b.principal = f.principal"
            " AND b.reconciled_on = f.reconciled_on AND b.file_id = ?)"
            f" AND NOT EXISTS (SELECT 1 FROM {scratch} s WHERE s.file_id = ? AND s.reconciled_on = f.reconciled_on"
            " AND s.principal = f.principal AND s.identity = f.identity)",
            (file_id, file_id, orderer, orderer, file_id, file_id, file_id),
        )
    )
    # 3. identities of the replaced snapshots not present yet: new in this file
    content = ", ".join(_CONTENT_COLUMNS)
    s_content = ", ".join(f"s.{c}" for c in _CONTENT_COLUMNS)
    new = _rowcount(
        execute(
            f"INSERT INTO {n.feed} (orderer, principal, reconciled_on, identity, first_file_id,"
            f" first_delivery_morning, {content})"
            " SELECT fl.orderer, s.principal, s.reconciled_on, s.identity, fl.file_id, fl.delivery_morning,"
            f" {s_content}"
            f" FROM {scratch} s JOIN {t.files} fl ON fl.file_id = s.file_id"
            " WHERE s.file_id = ? AND NOT EXISTS ("
            f"SELECT 1 FROM {n.feed} f WHERE f.orderer = fl.orderer AND f.reconciled_on = s.reconciled_on"
            " AND f.principal = s.principal AND f.identity = s.identity AND f.gone_file_id IS NULL)",
            (file_id,),
        )
    )
    return gone, new


def _count(execute: Execute, sql: str, value: Any) -> int:
    row = execute(sql, (value,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
