"""Ready views over the warehouse tables, created with them. Plain SQL (no dialect features beyond
window functions), so any common-sql database can run them. No Airflow import.

* ``<prefix>current_balances``: each principal's balance from its newest snapshot;
* ``<prefix>kronofogden_debts``: principals whose current Kronofogden balance is a debt (< 0);
* ``<prefix>turned_negative``: principals whose Skatteverket balance is negative in the newest file of
  their orderer and was not (>= 0) in their previous snapshot;
* ``<prefix>transaction_changes``: the change feed as rows ``change`` = ``new`` / ``gone`` per ``file_id``;
* ``<prefix>transactions_first_seen``: the stored transactions with the file (and delivery morning) each
  first appeared in.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from airflow_provider_skattekonto.loading.change_feed import feed_ddl_statements, feed_names, identity_sql
from airflow_provider_skattekonto.loading.names import qualified_name

__all__ = ["VIEW_SUFFIXES", "ensure_feed_and_views", "view_names", "view_statements"]

VIEW_SUFFIXES = (
    "current_balances",
    "kronofogden_debts",
    "turned_negative",
    "transaction_changes",
    "transactions_first_seen",
)


def view_names(prefix: str, schema: str | None = None) -> dict[str, str]:
    """``suffix -> quoted name`` of every view."""
    return {suffix: qualified_name(prefix, schema, suffix) for suffix in VIEW_SUFFIXES}


def view_statements(*, dialect: str, prefix: str, schema: str | None = None) -> list[tuple[str, str]]:
    """``(quoted view name, CREATE VIEW statement)`` in creation order (later views use earlier ones)."""
    n = feed_names(prefix, schema)
    t = n.tables
    v = view_names(prefix, schema)
    feed_columns = (
        "orderer, principal, reconciled_on, identity, sequence_no, transaction_id, transaction_date,"
        " interest_date, transaction_text, amount_skatteverket_ore, amount_kronofogden_ore, first_file_id"
    )
    views = {
        "current_balances": f"""SELECT b.orderer, b.principal, b.reconciled_on, b.balance_skatteverket_ore,
    b.balance_kronofogden_ore, b.interest_skatteverket_ore, b.last_updated, b.next_reconciliation_on,
    b.file_id, f.delivery_morning
FROM {t.balances} b
JOIN {t.files} f ON f.file_id = b.file_id
WHERE b.reconciled_on = (SELECT MAX(n.reconciled_on) FROM {t.balances} n
                         WHERE n.orderer = b.orderer AND n.principal = b.principal)""",
        "kronofogden_debts": f"""SELECT orderer, principal, reconciled_on, balance_kronofogden_ore,
    balance_skatteverket_ore, last_updated, file_id, delivery_morning
FROM {v["current_balances"]}
WHERE balance_kronofogden_ore < 0""",
        "turned_negative": f"""SELECT c.orderer, c.principal, c.reconciled_on, c.file_id, c.delivery_morning,
    c.balance_skatteverket_ore, p.balance_skatteverket_ore AS previous_balance_skatteverket_ore,
    p.file_id AS previous_file_id, p.delivery_morning AS previous_delivery_morning
FROM {n.history} c
JOIN {t.files} f ON f.file_id = c.file_id
JOIN {n.history} p ON p.orderer = c.orderer AND p.principal = c.principal
WHERE f.created_at = (SELECT MAX(g.created_at) FROM {t.files} g WHERE g.orderer = c.orderer)
  AND c.balance_skatteverket_ore < 0
  AND p.balance_skatteverket_ore >= 0
  AND ((p.reconciled_on = c.reconciled_on AND p.snapshot_no = c.snapshot_no - 1)
       OR (c.snapshot_no = 1
           AND p.reconciled_on = (SELECT MAX(r.reconciled_on) FROM {n.history} r
                                  WHERE r.orderer = c.orderer AND r.principal = c.principal
                                    AND r.reconciled_on < c.reconciled_on)
           AND p.snapshot_no = (SELECT MAX(s.snapshot_no) FROM {n.history} s
                                WHERE s.orderer = p.orderer AND s.principal = p.principal
                                  AND s.reconciled_on = p.reconciled_on)))""",
        "transaction_changes": f"""SELECT 'new' AS change, first_file_id AS file_id,
    first_delivery_morning AS delivery_morning, {feed_columns}
FROM {n.feed}
UNION ALL
SELECT 'gone' AS change, gone_file_id AS file_id, gone_delivery_morning AS delivery_morning, {feed_columns}
FROM {n.feed}
WHERE gone_file_id IS NOT NULL""",
        "transactions_first_seen": f"""SELECT t.orderer, t.principal, t.reconciled_on, t.file_id, t.sequence_no,
    t.transaction_id, t.transaction_date, t.interest_date, t.transaction_text, t.amount_skatteverket_ore,
    t.amount_kronofogden_ore, t.identity, f.first_file_id, f.first_delivery_morning
FROM (SELECT t.*, {identity_sql(dialect)} AS identity FROM {t.transactions} t) t
LEFT JOIN {n.feed} f ON f.orderer = t.orderer AND f.reconciled_on = t.reconciled_on
    AND f.principal = t.principal AND f.identity = t.identity AND f.gone_file_id IS NULL""",
    }
    return [(v[suffix], f"CREATE VIEW {v[suffix]} AS\n{views[suffix]}") for suffix in VIEW_SUFFIXES]


def _exists(conn: Any, dialect: str, name: str) -> bool:
    """Whether a table or view answers ``SELECT`` (probed in its own transaction)."""
    from airflow_provider_skattekonto.loading.dbapi import _transaction

    try:
        with _transaction(conn, dialect) as cur:
            cur.execute(f"SELECT 1 FROM {name} WHERE 1 = 0")
            cur.fetchall()
        return True
    except Exception:
        return False


def ensure_feed_and_views(conn: Any, *, dialect: str, prefix: str, schema: str | None = None) -> None:
    """Create the change-feed tables, their indexes and the views where missing; each object commits on
    its own. Existing objects are left as they are."""
    from airflow_provider_skattekonto.loading.dbapi import _transaction

    statements = feed_ddl_statements(dialect=dialect, prefix=prefix, schema=schema)
    if dialect != "generic":
        with _transaction(conn, dialect) as cur:
            for table, indexes in statements:
                cur.execute(table.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1))
                for index in indexes:
                    cur.execute(index.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
    else:
        for table, indexes in statements:
            name = table.split("(", 1)[0].removeprefix("CREATE TABLE ").strip()
            if _exists(conn, dialect, name):
                continue
            with _transaction(conn, dialect) as cur:
                cur.execute(table)
                for index in indexes:
                    cur.execute(index)
    for name, statement in view_statements(dialect=dialect, prefix=prefix, schema=schema):
        if _exists(conn, dialect, name):
            continue
        with suppress(Exception), _transaction(conn, dialect) as cur:  # created meanwhile by a concurrent load
            cur.execute(statement)
        if not _exists(conn, dialect, name):
            with _transaction(conn, dialect) as cur:  # raise the real error
                cur.execute(statement)
