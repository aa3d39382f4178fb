"""Paths, route names and the exact status bodies the sandbox answers with (from SERVICE.md)."""

from __future__ import annotations

import json

__all__ = [
    "ADMIN_PREFIX",
    "BESTALL_PATH",
    "ETRANSPORT_FILES_PATH",
    "ETRANSPORT_PREFIX",
    "FILE_KIND",
    "ORG_TOKEN_PATH",
    "ROUTES",
    "SCOPE",
    "STATUS_MESSAGES",
    "SYSORG_TOKEN_PATH",
    "status_body",
]

BESTALL_PATH = "/beskattning/skattekonto/huvudmans-saldo-och-transaktioner/v1/bestall"
SYSORG_TOKEN_PATH = "/oauth2/v1/sysorg/token"
ORG_TOKEN_PATH = "/oauth2/v1/org/token"
ETRANSPORT_PREFIX = "/etransport/v1"
ETRANSPORT_FILES_PATH = ETRANSPORT_PREFIX + "/files"
ADMIN_PREFIX = "/_sandbox"
SCOPE = "skahmst"
FILE_KIND = "skahmst"
# Scopes the token endpoint issues; a token of another scope than skahmst is refused by bestall (401).
ISSUABLE_SCOPES = frozenset({"skahmst", "ska"})

# Route names, used in stats and as fault targets.
ROUTE_TOKEN_SYSORG = "token_sysorg"
ROUTE_TOKEN_ORG = "token_org"
ROUTE_BESTALL = "bestall"
ROUTE_ETRANSPORT_LIST = "etransport_list"
ROUTE_ETRANSPORT_DOWNLOAD = "etransport_download"
ROUTE_ADMIN = "admin"
ROUTE_UNKNOWN = "unknown"
ROUTES = (
    ROUTE_TOKEN_SYSORG,
    ROUTE_TOKEN_ORG,
    ROUTE_BESTALL,
    ROUTE_ETRANSPORT_LIST,
    ROUTE_ETRANSPORT_DOWNLOAD,
    ROUTE_ADMIN,
    ROUTE_UNKNOWN,
)

# The service description's status table; 503 is plain text (see ``service_unavailable_text``).
STATUS_MESSAGES: dict[int, str] = {
    202: "Accepted",
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    410: "Gone",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    429: "To many requests",  # sic, as the service answers
    500: "Internal server error",
    504: "Timeout",
}


def service_unavailable_text(path: str) -> str:
    """The 503 plain-text body, as another component of Skatteverket's platform answers it."""
    return f"Service not available for request uri: {path}"


def status_body(status: int, path: str) -> tuple[bytes, str]:
    """(body, content type) of the spec's answer for ``status`` on ``path``."""
    if status == 503:
        return service_unavailable_text(path).encode("utf-8"), "text/plain; charset=utf-8"
    message = STATUS_MESSAGES.get(status, "Error")
    return json.dumps({"message": message}).encode("utf-8"), "application/json"
