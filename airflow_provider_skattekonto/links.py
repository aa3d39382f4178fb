"""Operator extra links: the ``bestall`` order and the archived answer file, as buttons on the task.

Each link's URL is pushed to XCom (under the link's own ``xcom_key``) the moment it is known: right
after the 202, and right before a file is loaded. So it survives a later failure of the task and
shows while the task is still deferred or running, which is when Skatteverket support asks for the
``skv_client_correlation_id``. Airflow's API server reads that XCom for the task's extra links.

Object-storage archives link to their console (S3, GCS). Other archives, and the order, link to
the small page this provider's plugin serves under ``/skattekonto/`` on the Airflow API server; the
page only echoes (escaped) what the link carries: no secrets, no data, no database access.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

PAGE_PREFIX = "/skattekonto"
_CORRELATION_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def _airflow_url(path: str, query: Mapping[str, Any]) -> str:
    """``path`` on the Airflow API server (``[api] base_url``), with ``query``."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="/") or "/"
    pairs = {k: str(v) for k, v in query.items() if v not in (None, "")}
    return f"{base.rstrip('/')}{PAGE_PREFIX}/{path}?{urlencode(pairs)}"


def order_url(order: Mapping[str, Any]) -> str:
    """The link of an accepted order (the BestallOperator's XCom): its page with both correlation ids."""
    return _airflow_url(
        "order",
        {
            "correlation_id": order.get("correlation_id"),
            "server_correlation_id": order.get("server_correlation_id"),
            "ordered_at": order.get("ordered_at"),
            "delivery_morning": order.get("delivery_morning"),
        },
    )


def archived_file_url(path: str, *, sha256: str | None = None, size: int | None = None) -> str:
    """Where a person can see an archived file: the S3/GCS console, else this provider's page."""
    parts = urlsplit(path)
    key = parts.path.lstrip("/")
    if parts.scheme in ("s3", "s3a") and parts.netloc:
        return f"https://s3.console.aws.amazon.com/s3/object/{quote(parts.netloc)}?prefix={quote(key)}"
    if parts.scheme in ("gs", "gcs") and parts.netloc:
        return f"https://console.cloud.google.com/storage/browser/_details/{quote(parts.netloc)}/{quote(key)}"
    return _airflow_url("archived-file", {"path": path, "sha256": sha256, "size": size})


class _PushedLink(BaseOperatorLink):
    """A link whose URL the task pushed to XCom under :attr:`xcom_key` as soon as it knew it."""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return value if isinstance(value, str) else ""

    @classmethod
    def reserve(cls, context: Any) -> None:
        """Publish an empty link when a try starts. Airflow reads every extra link of a task when it ends or
        defers; one not pushed yet answers 404, which the task SDK logs as an error ("XCom not found")."""
        cls.push(context, "")

    @classmethod
    def push(cls, context: Any, url: str) -> None:
        """Publish ``url`` for this task instance now (before any wait that may fail)."""
        ti = context.get("ti") if isinstance(context, Mapping) else None
        if ti is not None:
            ti.xcom_push(key=cls().xcom_key, value=url)


class SkattekontoOrderLink(_PushedLink):
    """The ``bestall`` order: its ``skv_client_correlation_id``, what Skatteverket support asks for."""

    name = "Skatteverket order"


class ArchivedFileLink(_PushedLink):
    """The answer file in the archive (``archive_url``)."""

    name = "Archived answer file"


# -- the pages behind the links (a plain ASGI app, mounted by the plugin on the API server) ----------
_STYLE = "body{font-family:sans-serif;max-width:46em;margin:2em auto}code{font-size:1.1em}td{padding:.2em 1em .2em 0}"


def _page(title: str, rows: list[tuple[str, str]], note: str) -> str:
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td></tr>" for k, v in rows)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table>{cells}</table><p>{html.escape(note)}</p></body></html>"
    )


def render_page(path: str, query: Mapping[str, str]) -> tuple[int, str]:
    """(HTTP status, HTML) of a link page; everything shown is escaped, odd input answers 400/404."""
    if path == "/order":
        correlation_id = query.get("correlation_id", "")
        if not _CORRELATION_ID.fullmatch(correlation_id):
            return 400, _page("Not an order link", [], "The link carries no valid skv_client_correlation_id.")
        rows = [("skv_client_correlation_id", correlation_id)]
        for label, key in (
            ("skv_correlation_id (Skatteverket's)", "server_correlation_id"),
            ("ordered at", "ordered_at"),
            ("answer file due on E-transport by", "delivery_morning"),
        ):
            if query.get(key):
                rows.append((label, query[key][:100]))
        note = (
            "Give Skatteverket support the skv_client_correlation_id (and skv_correlation_id) when you ask "
            "about this order of the service 'Skattekonto: hämta huvudmäns saldo och transaktioner'."
        )
        return 200, _page("Skatteverket Skattekonto order", rows, note)
    if path == "/archived-file":
        if not query.get("path"):
            return 400, _page("Not a file link", [], "The link carries no archive path.")
        rows = [("archived at", query["path"][:1000])]
        rows += [(k, query[k][:100]) for k in ("sha256", "size") if query.get(k)]
        return 200, _page("Archived answer file", rows, "The archive_url of the skattekonto connection holds it.")
    return 404, _page("Not found", [], "Unknown page.")


async def link_pages(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """ASGI app serving :func:`render_page` (GET only)."""
    if scope["type"] != "http":
        return
    if scope.get("method") not in ("GET", "HEAD"):
        status, body = 405, _page("Method not allowed", [], "Only GET.")
    else:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        try:
            raw = parse_qs(scope.get("query_string", b"").decode("utf-8"), max_num_fields=10)
        except ValueError:  # too many fields, undecodable bytes
            status, body = 400, _page("Bad link", [], "The link's query cannot be read.")
        else:
            status, body = render_page(path, {k: v[0] for k, v in raw.items()})
    payload = body.encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload if scope.get("method") != "HEAD" else b""})
