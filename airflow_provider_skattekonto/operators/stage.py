"""SkattekontoStageFilesOperator: an answer file's rows as Parquet/CSV files in object storage, plus a manifest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_skattekonto._task_errors import fail_fast_unless_retryable
from airflow_provider_skattekonto.version_compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SkattekontoStageFilesOperator"]


class SkattekontoStageFilesOperator(BaseOperator):
    """Write the parsed rows of an answer file as one file per table (``transactions``, ``balances``,
    ``files``) in Parquet and/or CSV to object storage, then ``manifest.json`` (row counts, sums,
    checksums of every staged file, the answer file's sha256). Snowflake, BigQuery or Redshift then load
    them with their own transfer operators.

    The files go to ``<destination>/<answer file name without .txt>/``; a staged set is complete when its
    manifest exists (it is written last). Streaming, memory flat in the file size; the answer file's
    sha256 is verified. Staging the same file again rewrites the same files. See
    ``docs/warehouse-schema.md`` ("Staged files").

    XCom (return value): the manifest, with ``manifest_url`` and ``folder_url``.

    :param file: the E-transport sensor's XCom (templated), as for ``SkattekontoToSqlOperator``.
    :param destination: an ``ObjectStoragePath`` URL of the staging area (templated), e.g.
        ``s3://bucket/skattekonto/staged``.
    :param destination_conn_id: the object-storage connection for ``destination`` (e.g. ``aws_default``).
    :param formats: ``"parquet"`` (extra ``[parquet]``) and/or ``"csv"``.
    """

    template_fields: Sequence[str] = ("file", "destination", "destination_conn_id")
    ui_color = "#dae8fc"

    def __init__(
        self,
        *,
        file: Any,
        destination: str,
        destination_conn_id: str | None = None,
        formats: Sequence[str] = ("parquet", "csv"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_skattekonto.loading.staging import FORMATS

        formats = list(formats)
        if not formats or any(f not in FORMATS for f in formats):
            raise ValueError(f"formats={formats!r}: choose one or more of {', '.join(FORMATS)}")
        self.file = file
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.formats = formats

    @fail_fast_unless_retryable()
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import ObjectStoragePath

        from airflow_provider_skattekonto.checksums import sha256_of
        from airflow_provider_skattekonto.loading.staging import MANIFEST_NAME, stage_answer_file
        from airflow_provider_skattekonto.operators.load import _file_info

        info = _file_info(self.file)
        if not self.destination or "://" not in str(self.destination):
            raise AirflowFailException(
                f"destination={self.destination!r}: give an object-storage URL such as s3://bucket/prefix "
                "or file:///path"
            )
        stem = info.name[:-4] if info.name.lower().endswith(".txt") else info.name
        folder = ObjectStoragePath(str(self.destination).rstrip("/"), conn_id=self.destination_conn_id) / stem
        source = ObjectStoragePath(info.url)
        sha256, size = info.sha256, info.size
        if sha256 is None:
            with source.open("rb") as stream:
                sha256, size = sha256_of(stream)
        self.log.info("Staging %s as %s into %s", info.name, ", ".join(self.formats), folder)
        with source.open("rb") as stream:
            manifest = stage_answer_file(
                stream,
                folder,
                file_name=info.name,
                sha256=sha256,
                size=size,
                delivery_morning=info.delivery_morning,
                formats=self.formats,
            )
        tables = manifest["tables"]
        self.log.info(
            "Staged %s: %d transactions, %d balances; manifest %s",
            info.name,
            tables["transactions"]["rows"],
            tables["balances"]["rows"],
            folder / MANIFEST_NAME,
        )
        result = {**manifest, "folder_url": str(folder), "manifest_url": str(folder / MANIFEST_NAME)}
        events = context.get("outlet_events") if isinstance(context, dict) or hasattr(context, "get") else None
        if events is not None:
            from airflow.sdk import Asset

            for outlet in self.outlets or ():
                if isinstance(outlet, Asset):
                    events[outlet].extra.update(
                        {"file_id": manifest["file_id"], "manifest_url": result["manifest_url"]}
                    )
        return result
