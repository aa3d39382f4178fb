"""Answer files as E-transport lists them: safe names, the naming pattern, metadata. Pure.

E-transport's wire protocol and file naming are not public. We assume names like
``SKAHMST_<orgnr10>_<YYYYMMDD>_<NNN>.txt`` (service, orderer, delivery date, sequence); the pattern
is configurable. A remote name is never trusted as a path: only a strict allow-list of characters
passes, so separators, ``..``, absolute paths and control characters are refused.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_FILE_PATTERN",
    "RemoteFile",
    "UnsafeRemoteNameError",
    "check_remote_name",
    "match_file_name",
]

DEFAULT_FILE_PATTERN = r"^SKAHMST_(?P<orderer>\d{10})_(?P<date>\d{8})_(?P<sequence>\d{3})\.txt$"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class UnsafeRemoteNameError(ValueError):
    """A remote file name that could escape the target folder or is not a plain file name."""


def check_remote_name(name: str) -> str:
    """Return ``name`` if it is a plain, safe file name; raise :class:`UnsafeRemoteNameError` otherwise."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        printable = repr(name)[:120]
        raise UnsafeRemoteNameError(
            f"Refusing remote file name {printable}: only letters, digits, '.', '_' and '-' are allowed "
            "(no path separators, '..', absolute paths or control characters; at most 200 characters). "
            "The file was not downloaded; report the name to whoever runs the file source."
        )
    return name


def match_file_name(name: str, pattern: str = DEFAULT_FILE_PATTERN) -> tuple[str | None, dt.date | None] | None:
    """(orderer, delivery date) from ``name`` if it matches ``pattern``, else None.

    The pattern's optional named groups ``orderer`` (10 digits) and ``date`` (YYYYMMDD) are read.
    """
    match = re.fullmatch(pattern, name)
    if match is None:
        return None
    groups = match.groupdict()
    day = dt.datetime.strptime(groups["date"], "%Y%m%d").date() if groups.get("date") else None
    return groups.get("orderer"), day


@dataclass(frozen=True)
class RemoteFile:
    """An answer file offered by a delivery source."""

    name: str
    size: int | None
    sha256: str | None
    delivered_at: dt.datetime | None
    delivery_date: dt.date | None
    orderer: str | None
    kind: str = "skahmst"

    def __post_init__(self) -> None:
        check_remote_name(self.name)
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"Remote file {self.name}: sha256 {self.sha256!r} is not 64 lowercase hex digits")

    def to_json(self) -> dict[str, Any]:
        """JSON-simple form (XCom, trigger events)."""
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "delivery_date": self.delivery_date.isoformat() if self.delivery_date else None,
            "orderer": self.orderer,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        """Inverse of :meth:`to_json`."""
        return cls(
            name=data["name"],
            size=int(data["size"]) if data.get("size") is not None else None,
            sha256=data.get("sha256"),
            delivered_at=dt.datetime.fromisoformat(data["delivered_at"]) if data.get("delivered_at") else None,
            delivery_date=dt.date.fromisoformat(data["delivery_date"]) if data.get("delivery_date") else None,
            orderer=data.get("orderer"),
            kind=data.get("kind") or "skahmst",
        )
