"""SkattekontoToSqlOperator: load a downloaded answer file into a SQL warehouse (snapshot-safe, idempotent)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_skattekonto._task_errors import fail_fast_unless_retryable
from airflow_provider_skattekonto.links import ArchivedFileLink, archived_file_url
from airflow_provider_skattekonto.loading.names import DEFAULT_PREFIX, table_names
from airflow_provider_skattekonto.operators._sql import check_table_names_unless_templated, dialect_of, sql_connection
from airflow_provider_skattekonto.version_compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SkattekontoToSqlOperator", "dialect_of"]


# The load report's fields every outlet asset event carries (downstream DAGs read them from the event).
_OUTLET_EXTRA_KEYS = (
    "file_id",
    "file_name",
    "sha256",
    "orderer",
    "created_at",
    "noop",
    "principals_loaded",
    "principals_skipped_older",
    "transactions_inserted",
    "transactions_new",
    "transactions_gone",
)


@dataclass(frozen=True)
class _FileInfo:
    url: str
    name: str
    sha256: str | None
    size: int | None
    delivery_morning: dt.datetime | None
    orderer: str | None


def _require_reachable(path: Any, url: str) -> None:
    """A missing local archived file fails with what to do, never a bare FileNotFoundError."""
    if getattr(path, "protocol", "file") not in ("file", "local") or path.exists():
        return
    import socket

    from airflow_provider_skattekonto.hooks.etransport import configured_executor, executor_is_local

    executor = configured_executor()
    where = f"this worker ({socket.gethostname()})"
    if executor and not executor_is_local(executor):
        raise AirflowFailException(
            f"The archived file {url} is not on {where}. The connection's archive_url is local disk, but "
            f"the executor ({executor}) ran the sensor that archived it on another machine. Set the "
            "skattekonto connection's extra 'archive_url' to shared object storage (s3://..., gs://..., or "
            "a shared mount), then clear the wait_for_file task."
        )
    raise AirflowFailException(
        f"The archived file {url} is not on {where}: was the archive (the connection's archive_url) moved "
        "or cleaned? Clear the wait_for_file task to download it again."
    )


def _file_info(file: Any) -> _FileInfo:
    """Read the upstream sensor's XCom (a dict, or its JSON text) or a plain path."""
    if isinstance(file, str):
        text = file.strip()
        if text.startswith("{"):
            try:
                file = json.loads(text)
            except ValueError:
                raise AirflowFailException(
                    f"file={text[:200]!r} is neither a path nor JSON. Pass the sensor's XCom as it is "
                    "(file=wait.output), or give the DAG render_template_as_native_obj=True when file is a "
                    "template such as '{{ ti.xcom_pull(task_ids=\"wait_for_file\") }}'."
                ) from None
        else:
            file = {"path": text}
    if not isinstance(file, dict):
        raise AirflowFailException(
            f"file must be the E-transport sensor's XCom (a dict with path, name, sha256...) or a path, "
            f"got {type(file).__name__}"
        )
    path = file.get("path")
    if not path:
        raise AirflowFailException(
            f"The file {file.get('name')!r} has no local path: the upstream sensor did not download it "
            "(download=False?). Let the sensor download the file, or pass its path."
        )
    url = str(path) if "://" in str(path) else f"file://{path}"
    name = str(file.get("name") or url.rstrip("/").rsplit("/", 1)[-1])
    morning = file.get("delivery_morning")
    delivery_morning: dt.datetime | None = None
    if morning:
        delivery_morning = morning if isinstance(morning, dt.datetime) else dt.datetime.fromisoformat(str(morning))
        if delivery_morning.tzinfo is None:
            raise AirflowFailException(f"delivery_morning={morning!r} has no UTC offset")
    size = file.get("size")
    return _FileInfo(
        url=url,
        name=name,
        sha256=file.get("sha256") or None,
        size=int(size) if size is not None else None,
        delivery_morning=delivery_morning,
        orderer=file.get("orderer") or None,
    )


class SkattekontoToSqlOperator(BaseOperator):
    """Load an answer file into SQL tables: per principal the newest snapshot wins, all or nothing.

    Reads the file from object storage (``file://`` and any ``ObjectStoragePath`` scheme) as a stream,
    re-verifies its sha256 (and size) while parsing, and loads it in one transaction through any
    common-sql connection (SQLite, PostgreSQL with COPY, other DB-API databases generically). A file
    already loaded is a no-op. See ``docs/warehouse-schema.md`` for the tables and the rules.

    XCom (return value): the load report as a dict (``noop``, ``principals_loaded``,
    ``principals_skipped_older``, ``transactions_inserted``, ``transactions_deleted``, sums, and the change
    feed's ``transactions_new`` / ``transactions_gone``). The asset events of the task's outlets carry the
    ids and counts in their ``extra``.

    Lineage: the extra link *Archived answer file* points at the file being loaded (set before the load
    starts, so it stays after a failure). Every Asset in ``outlets`` gets an asset event whose extra
    names the file and what was loaded (see :func:`~airflow_provider_skattekonto.lineage.warehouse_assets`
    for the tables' Assets in Airflow's URI scheme); OpenLineage sees the file in and the three tables
    out, in the namespace the SQL hook itself reports.

    :param file: the E-transport sensor's XCom (templated): a dict with ``path`` (an ObjectStoragePath
        URL or local path), ``name``, ``sha256``, ``size``, ``delivery_morning`` (ISO), ``orderer``; or a
        plain path/URL (its sha256 is then computed by a first read).
    :param sql_conn_id: a common-sql connection (``sqlite``, ``postgres``, ...).
    :param table_prefix: prefix of the three table names (letters, digits, underscores).
    :param table_schema: database schema (namespace) of the tables; default: the connection's default.
    :param create_tables: create the tables if missing (``CREATE TABLE IF NOT EXISTS``).
    """

    template_fields: Sequence[str] = ("file", "sql_conn_id", "table_prefix", "table_schema")
    ui_color = "#d9ead3"
    operator_extra_links = (ArchivedFileLink(),)
    _lineage: tuple[str, Any, Any, str] | None = None  # (file URL, SQL hook, its connection, dialect)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (when its provider is installed): the archived answer file in, the three tables out."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        from airflow_provider_skattekonto.lineage import database_namespace, file_dataset, table_datasets

        if self._lineage is None:
            return OperatorLineage()
        url, hook, connection, dialect = self._lineage
        namespace, database = database_namespace(hook, connection, dialect)
        schema = self.table_schema or ("public" if dialect == "postgresql" else None)
        return OperatorLineage(
            inputs=[file_dataset(url)], outputs=table_datasets(namespace, database, schema, self.table_prefix)
        )

    def __init__(
        self,
        *,
        file: str | dict[str, Any],
        sql_conn_id: str,
        table_prefix: str = DEFAULT_PREFIX,
        table_schema: str | None = None,
        create_tables: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.file = file
        self.sql_conn_id = sql_conn_id
        self.table_prefix = table_prefix
        self.table_schema = table_schema
        self.create_tables = create_tables
        check_table_names_unless_templated(table_prefix, table_schema)

    @fail_fast_unless_retryable()
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import ObjectStoragePath

        from airflow_provider_skattekonto.checksums import sha256_of
        from airflow_provider_skattekonto.loading.snapshot import load_answer_stream
        from airflow_provider_skattekonto.loading.tables import ensure_tables
        from airflow_provider_skattekonto.version_compat import BaseHook

        ArchivedFileLink.reserve(context)
        info = _file_info(self.file)
        table_names(self.table_prefix, self.table_schema)
        path = ObjectStoragePath(info.url)
        _require_reachable(path, info.url)
        sha256, size = info.sha256, info.size
        if sha256 is None:
            with path.open("rb") as stream:
                sha256, size = sha256_of(stream)
            self.log.info("%s: no sha256 given; computed %s (%d bytes)", info.name, sha256, size)

        ArchivedFileLink.push(context, archived_file_url(info.url, sha256=sha256, size=size))
        with sql_connection(self.sql_conn_id, self.log) as (hook, dialect, conn):
            self._lineage = (info.url, hook, BaseHook.get_connection(self.sql_conn_id), dialect)
            self.log.info("Loading %s (%s) into %s (dialect %s)", info.name, info.url, self.sql_conn_id, dialect)
            if self.create_tables:
                ensure_tables(conn, dialect=dialect, prefix=self.table_prefix, schema=self.table_schema)
            with path.open("rb") as stream:
                result = load_answer_stream(
                    conn,
                    stream,
                    dialect=dialect,
                    file_name=info.name,
                    sha256=sha256,
                    size=size,
                    delivery_morning=info.delivery_morning,
                    prefix=self.table_prefix,
                    schema=self.table_schema,
                    expected_orderer=info.orderer,
                )

        if result.noop:
            self.log.warning("%s: %s", info.name, result.noop_reason)
        else:
            self.log.info(
                "%s: %d principals loaded (%d replaced an older snapshot), %d skipped as older than the "
                "stored data; %d transactions inserted, %s deleted; balance sum %d öre.",
                info.name,
                result.principals_loaded,
                result.principals_replaced,
                result.principals_skipped_older,
                result.transactions_inserted,
                result.transactions_deleted,
                result.balance_sum_loaded_ore,
            )
            self.log.info(
                "%s: change feed: %d transactions new in this file, %d gone.",
                info.name,
                result.transactions_new,
                result.transactions_gone,
            )
        report = result.to_dict()
        self._annotate_outlet_events(context, report)
        return report

    def _annotate_outlet_events(self, context: Context, report: dict[str, Any]) -> None:
        """Put the load's counts (change feed included) on the asset events of this task's outlets."""
        from airflow.sdk import Asset

        events = context.get("outlet_events")
        if events is None:
            return
        extra = {key: report[key] for key in _OUTLET_EXTRA_KEYS}
        extra["rows_loaded"] = report["principals_loaded"] + report["transactions_inserted"]
        for outlet in self.outlets or ():
            if isinstance(outlet, Asset):
                events[outlet].extra.update(extra)
