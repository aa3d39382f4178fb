"""The request handler: resolves each request's route, applies request faults and calls the endpoint.

Statistics are counted before the answer's last bytes go out, so a client that has its answer also
sees it in ``/_sandbox/stats``.
"""

from __future__ import annotations

import logging
import math
import uuid
from urllib.parse import unquote, urlsplit

from airflow_provider_skattekonto.sandbox.admin_endpoints import AdminEndpoints
from airflow_provider_skattekonto.sandbox.bestall_endpoint import BestallEndpoint
from airflow_provider_skattekonto.sandbox.connection import NETWORK_ERRORS, Reply
from airflow_provider_skattekonto.sandbox.etransport_endpoints import EtransportEndpoints
from airflow_provider_skattekonto.sandbox.protocol import (
    ADMIN_PREFIX,
    BESTALL_PATH,
    ETRANSPORT_FILES_PATH,
    ORG_TOKEN_PATH,
    ROUTE_ADMIN,
    ROUTE_BESTALL,
    ROUTE_ETRANSPORT_DOWNLOAD,
    ROUTE_ETRANSPORT_LIST,
    ROUTE_TOKEN_ORG,
    ROUTE_TOKEN_SYSORG,
    ROUTE_UNKNOWN,
    SYSORG_TOKEN_PATH,
    status_body,
)
from airflow_provider_skattekonto.sandbox.token_endpoints import TokenEndpoints

logger = logging.getLogger(__name__)


def resolve_route(path: str) -> tuple[str, str | None]:
    """(route name, file name for downloads) of a request path."""
    if path == BESTALL_PATH:
        return ROUTE_BESTALL, None
    if path == SYSORG_TOKEN_PATH:
        return ROUTE_TOKEN_SYSORG, None
    if path == ORG_TOKEN_PATH:
        return ROUTE_TOKEN_ORG, None
    if path in (ETRANSPORT_FILES_PATH, ETRANSPORT_FILES_PATH + "/"):
        return ROUTE_ETRANSPORT_LIST, None
    if path.startswith(ETRANSPORT_FILES_PATH + "/"):
        name = unquote(path[len(ETRANSPORT_FILES_PATH) + 1 :])
        if name and "/" not in name and "\\" not in name and name not in (".", ".."):
            return ROUTE_ETRANSPORT_DOWNLOAD, name
        return ROUTE_UNKNOWN, None
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return ROUTE_ADMIN, None
    return ROUTE_UNKNOWN, None


_ALLOWED_METHODS = {
    ROUTE_BESTALL: ("POST",),
    ROUTE_TOKEN_SYSORG: ("POST",),
    ROUTE_TOKEN_ORG: ("POST",),
    ROUTE_ETRANSPORT_LIST: ("GET",),
    ROUTE_ETRANSPORT_DOWNLOAD: ("GET", "HEAD"),
}


class Handler(TokenEndpoints, BestallEndpoint, EtransportEndpoints, AdminEndpoints):
    """One connection of the sandbox server; each request goes to the endpoint its path names."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self._path = parts.path or "/"
        self._route, file_name = resolve_route(self._path)
        self._extra_headers = {}
        self._after_fault = None
        self._rate = None
        self._replied = False
        sandbox = self.sandbox
        try:
            try:
                body = self._read_body()
            except Reply:
                self.close_connection = True  # the rest of the body is still on the wire
                raise
            if self._route == ROUTE_ADMIN:
                self._admin(parts.query, body)
                return
            self._extra_headers["skv_correlation_id"] = str(uuid.uuid4())
            client_correlation = self.headers.get("skv_client_correlation_id")
            if client_correlation is not None:
                self._extra_headers["skv_client_correlation_id"] = client_correlation
            if self._route == ROUTE_UNKNOWN:
                raise Reply(404)
            allowed = _ALLOWED_METHODS[self._route]
            if self.command not in allowed:
                raise Reply(405, headers={"Allow": ", ".join(allowed)})
            if not self._apply_request_faults():
                return
            if self._route in (ROUTE_TOKEN_SYSORG, ROUTE_TOKEN_ORG):
                self._token(body)
            elif self._route == ROUTE_BESTALL:
                self._bestall(body, client_correlation)
            elif self._route == ROUTE_ETRANSPORT_LIST:
                self._etransport_list(parts.query)
            else:
                assert file_name is not None
                self._etransport_download(file_name)
        except Reply as reply:
            if reply.body is None:
                body_bytes, content_type = status_body(reply.status, self._path)
            else:
                body_bytes, content_type = reply.body, reply.content_type
            self._send(reply.status, body_bytes, content_type, reply.headers)
        except NETWORK_ERRORS:
            self.close_connection = True
            raise
        except Exception:
            logger.exception("Sandbox error on %s %s", self.command, self._path)
            self.close_connection = True
            if not self._replied:
                self._after_fault = None
                body_bytes, content_type = status_body(500, self._path)
                self._send(500, body_bytes, content_type)
        finally:
            if sandbox.server_stopping:
                self.close_connection = True

    def _apply_request_faults(self) -> bool:
        """Apply slow/status/drop faults; False when the request has been answered (or dropped)."""
        faults = self.sandbox.faults
        slow = faults.take(("slow",), self._route, self._path)
        if slow is not None and not self.sandbox.slow_pause(slow.seconds):
            self._drop(counted=False)
            return False
        fault = faults.take(("status", "drop", "drop_mid_response"), self._route, self._path)
        if fault is None:
            return True
        if fault.after or fault.kind == "drop_mid_response":
            self._after_fault = fault
            return True
        if fault.kind == "drop":
            self._drop()
            return False
        assert fault.status is not None
        headers = {"Retry-After": str(math.ceil(fault.retry_after))} if fault.retry_after else {}
        body, content_type = status_body(fault.status, self._path)
        self._send(fault.status, body, content_type, headers)
        return False
