"""Balance continuity: does each stored balance follow from the previous one and the change feed? Read-only.

For every balance snapshot written by a file (``<prefix>balance_history``) that has a predecessor in the
same ``(orderer, principal, reconciled_on)`` chain::

    previous balance + transactions new in this file - transactions gone in this file == this balance

for both columns (Skatteverket and Kronofogden; a missing amount or balance counts as 0). The first
snapshot of a reconciliation period starts a new chain: it has nothing to be compared with. No Airflow
import; nothing is ever written (the reading transaction is rolled back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_skattekonto.loading.change_feed import feed_names
from airflow_provider_skattekonto.loading.names import DEFAULT_PREFIX

__all__ = ["ContinuityBreak", "ContinuityReport", "check_balance_continuity"]


@dataclass(frozen=True, slots=True)
class ContinuityBreak:
    """One snapshot whose balance does not follow from its predecessor (amounts in öre)."""

    orderer: str
    principal: str
    reconciled_on: str
    file_id: str
    previous_file_id: str
    column: str  # "skatteverket" or "kronofogden"
    previous_ore: int
    new_ore: int  # sum of the transactions new in this file
    gone_ore: int  # sum of the transactions gone in this file
    expected_ore: int  # previous + new - gone
    actual_ore: int  # the balance this file states

    def describe(self) -> str:
        return (
            f"principal {self.principal} (orderer {self.orderer}, reconciliation {self.reconciled_on}), "
            f"{self.column} balance in file {self.file_id}: {self.actual_ore} öre, expected {self.expected_ore} öre "
            f"= {self.previous_ore} (file {self.previous_file_id}) + {self.new_ore} new - {self.gone_ore} gone; "
            f"difference {self.actual_ore - self.expected_ore} öre"
        )


@dataclass(frozen=True)
class ContinuityReport:
    """The outcome of a check; :meth:`to_dict` is JSON-simple (for XCom)."""

    file_ids: list[str] | None  # the files checked (None: every stored snapshot)
    checked: int  # snapshots compared with their predecessor
    chain_starts: int  # first snapshots of a reconciliation period (nothing to compare)
    breaks: list[ContinuityBreak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def principals(self) -> list[str]:
        """The principals with a break, in order of appearance, without repeats."""
        return list(dict.fromkeys(b.principal for b in self.breaks))

    def summary(self) -> str:
        scope = "every stored snapshot" if self.file_ids is None else f"file(s) {', '.join(self.file_ids)}"
        head = f"Balance continuity of {scope}: {self.checked} snapshots checked, {self.chain_starts} chain starts"
        if self.ok:
            return f"{head}, all consistent."
        return f"{head}, {len(self.breaks)} breaks in {len(self.principals)} principals."

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "file_ids": self.file_ids,
            "checked": self.checked,
            "chain_starts": self.chain_starts,
            "break_count": len(self.breaks),
            "principals": self.principals,
            "breaks": [asdict(b) for b in self.breaks],
        }


def _sum_sql(feed: str, column: str, where: str) -> str:
    return (
        f"SELECT orderer, principal, reconciled_on, {column} AS file_id,"
        " SUM(COALESCE(amount_skatteverket_ore, 0)) AS sv, SUM(COALESCE(amount_kronofogden_ore, 0)) AS kf"
        f" FROM {feed} WHERE {column} {where} GROUP BY orderer, principal, reconciled_on, {column}"
    )


def continuity_sql(*, prefix: str = DEFAULT_PREFIX, schema: str | None = None, files: int | None = None) -> str:
    """The check's query (``?`` placeholders, repeated 3 times for ``files`` file ids; all when None)."""
    n = feed_names(prefix, schema)
    if files is None:
        where = "IS NOT NULL"
        current = ""
    else:
        where = f"IN ({', '.join('?' * files)})"
        current = f" WHERE c.file_id {where}"
    join = "{a}.orderer = c.orderer AND {a}.principal = c.principal AND {a}.reconciled_on = c.reconciled_on"
    return (
        "SELECT c.orderer, c.principal, c.reconciled_on, c.file_id, c.balance_skatteverket_ore,"
        " c.balance_kronofogden_ore, p.file_id, p.balance_skatteverket_ore, p.balance_kronofogden_ore,"
        " n.sv, n.kf, g.sv, g.kf"
        f" FROM {n.history} c"
        f" LEFT JOIN {n.history} p ON {join.format(a='p')} AND p.snapshot_no = c.snapshot_no - 1"
        f" LEFT JOIN ({_sum_sql(n.feed, 'first_file_id', where)}) n ON {join.format(a='n')} AND n.file_id = c.file_id"
        f" LEFT JOIN ({_sum_sql(n.feed, 'gone_file_id', where)}) g ON {join.format(a='g')} AND g.file_id = c.file_id"
        f"{current}"
        " ORDER BY c.orderer, c.principal, c.reconciled_on, c.snapshot_no"
    )


def check_balance_continuity(
    conn: Any,
    *,
    dialect: str,
    file_ids: Sequence[str] | None = None,
    prefix: str = DEFAULT_PREFIX,
    schema: str | None = None,
) -> ContinuityReport:
    """Check the balance snapshots written by ``file_ids`` (all stored snapshots when None).

    Reads only; the connection's transaction is rolled back at the end.
    """
    from airflow_provider_skattekonto.loading.dbapi import _Params, _paramstyle

    ids = None if file_ids is None else [str(f) for f in file_ids]
    if ids is not None and not ids:
        return ContinuityReport(file_ids=[], checked=0, chain_starts=0)
    params = _Params(_paramstyle(conn, dialect))
    sql = continuity_sql(prefix=prefix, schema=schema, files=None if ids is None else len(ids))
    values = [] if ids is None else ids * 3
    cur = conn.cursor()
    try:
        cur.execute(params.sql(sql), params.args(values))
        rows = cur.fetchall()
    finally:
        cur.close()
        conn.rollback()
    checked = starts = 0
    breaks: list[ContinuityBreak] = []
    for orderer, principal, period, file_id, sv, kf, prev_file, prev_sv, prev_kf, n_sv, n_kf, g_sv, g_kf in rows:
        if prev_file is None:
            starts += 1
            continue
        checked += 1
        for column, previous, new, gone, actual in (
            ("skatteverket", prev_sv, n_sv, g_sv, sv),
            ("kronofogden", prev_kf, n_kf, g_kf, kf),
        ):
            previous, new, gone, actual = (int(v or 0) for v in (previous, new, gone, actual))
            expected = previous + new - gone
            if expected != actual:
                breaks.append(
                    ContinuityBreak(
                        orderer=str(orderer),
                        principal=str(principal),
                        reconciled_on=str(period)[:10],
                        file_id=str(file_id),
                        previous_file_id=str(prev_file),
                        column=column,
                        previous_ore=previous,
                        new_ore=new,
                        gone_ore=gone,
                        expected_ore=expected,
                        actual_ore=actual,
                    )
                )
    return ContinuityReport(file_ids=ids, checked=checked, chain_starts=starts, breaks=breaks)
