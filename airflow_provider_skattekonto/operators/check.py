"""SkattekontoBalanceCheckOperator: balance continuity of loaded snapshots (read-only data-quality check)."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_skattekonto._task_errors import fail_fast_unless_retryable
from airflow_provider_skattekonto.loading.names import DEFAULT_PREFIX, table_names
from airflow_provider_skattekonto.operators._sql import check_table_names_unless_templated, sql_connection
from airflow_provider_skattekonto.version_compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SkattekontoBalanceCheckOperator"]

_ON_BREAK = ("fail", "warn")


def _file_ids(value: Any) -> list[str] | None:
    """File ids from the load operator's XCom (dict, or its rendering as text), a list, or one id."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise AirflowFailException(f"file_id={text[:200]!r} is neither an id nor a load report") from None
        elif not text:
            return None
        else:
            return [text]
    if isinstance(value, dict):
        if not value.get("file_id"):
            raise AirflowFailException("file_id: the load report has no file_id (was the load skipped?)")
        return [str(value["file_id"])]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            out.extend(_file_ids(item) or [])
        return out
    raise AirflowFailException(f"file_id must be an id, a list of ids or the load report, got {type(value).__name__}")


class SkattekontoBalanceCheckOperator(BaseOperator):
    """Check that each balance follows from the previous snapshot and the change feed; never writes.

    Per principal and reconciliation period: previous snapshot's balance + transactions new in the file -
    transactions gone in the file == the file's balance, for the Skatteverket and the Kronofogden
    balance. The first snapshot of a reconciliation period starts a new chain. Like common-sql's check
    operators, a failed check fails the task (``on_break="fail"``, no retry: the data will not change)
    naming the principals and the amounts in öre; ``on_break="warn"`` logs the same and succeeds.

    XCom (return value): ``ok``, ``checked``, ``chain_starts``, ``break_count``, ``principals``,
    ``breaks`` (each with the amounts).

    :param sql_conn_id: the warehouse's common-sql connection (the load operator's).
    :param file_id: which files' snapshots to check (templated): the load operator's XCom (its
        ``file_id``), a file id, a list of ids; None checks every stored snapshot.
    :param table_prefix: / :param table_schema: as given to the load operator.
    :param on_break: ``"fail"`` (default) or ``"warn"``.
    :param max_reported: breaks named in the error message (all are in the log and the XCom).
    """

    template_fields: Sequence[str] = ("file_id", "sql_conn_id", "table_prefix", "table_schema")
    ui_color = "#fff2cc"

    def __init__(
        self,
        *,
        sql_conn_id: str,
        file_id: Any = None,
        table_prefix: str = DEFAULT_PREFIX,
        table_schema: str | None = None,
        on_break: str = "fail",
        max_reported: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_break not in _ON_BREAK:
            raise ValueError(f"on_break={on_break!r}: use one of {', '.join(_ON_BREAK)}")
        self.sql_conn_id = sql_conn_id
        self.file_id = file_id
        self.table_prefix = table_prefix
        self.table_schema = table_schema
        self.on_break = on_break
        self.max_reported = max_reported
        check_table_names_unless_templated(table_prefix, table_schema)

    @fail_fast_unless_retryable()
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_skattekonto.loading.continuity import check_balance_continuity

        table_names(self.table_prefix, self.table_schema)
        ids = _file_ids(self.file_id)
        with sql_connection(self.sql_conn_id, self.log) as (_, dialect, conn):
            report = check_balance_continuity(
                conn, dialect=dialect, file_ids=ids, prefix=self.table_prefix, schema=self.table_schema
            )
        summary = report.summary()
        if report.ok:
            self.log.info("%s", summary)
            return report.to_dict()
        for brk in report.breaks:
            self.log.warning("%s", brk.describe())
        shown = report.breaks[: self.max_reported]
        more = len(report.breaks) - len(shown)
        message = "\n".join(
            [summary, *(f"- {b.describe()}" for b in shown), *([f"... and {more} more (see the log)"] if more else [])]
        )
        if self.on_break == "fail":
            raise AirflowFailException(message)
        self.log.warning("%s", message)
        return report.to_dict()
