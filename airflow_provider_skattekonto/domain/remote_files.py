"""Answer files as E-transport lists them: safe names, the naming pattern, metadata. Pure.

E-transport's wire protocol and file naming are not public. We assume names like
``SKAHMST_<orgnr10>_<YYYYMMDD>_<NNN>.txt`` (service, orderer, delivery date, sequence); the pattern
is configurable. A remote name is never trusted as a path: only a strict allow-list of characters
passes, so separators, ``..``, absolute paths and control characters are refused. Patterns match
ASCII only (``\\d`` is ``[0-9]``), and an orderer is only ever a valid organisation number.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from airflow_provider_skattekonto.domain.identifiers import is_organisation_number

__all__ = [
    "DEFAULT_FILE_PATTERN",
    "RemoteFile",
    "UnsafeRemoteNameError",
    "check_orderer",
    "check_remote_name",
    "match_file_name",
]

DEFAULT_FILE_PATTERN = r"^SKAHMST_(?P<orderer>[0-9]{10})_(?P<date>[0-9]{8})_(?P<sequence>[0-9]{3})\.txt$"
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


def check_orderer(orderer: Any) -> str:
    """Return ``orderer`` if it is a valid 10-digit organisation number; raise :class:`UnsafeRemoteNameError`.

    An orderer becomes a folder of the archive, so nothing else (``..``, separators, other digits) passes.
    """
    if not isinstance(orderer, str) or not orderer.isascii() or not is_organisation_number(orderer):
        raise UnsafeRemoteNameError(
            f"Refusing orderer {repr(orderer)[:60]}: not a valid 10-digit organisation number "
            "(digits 0-9, 3rd-4th digits >= 20, valid check digit)"
        )
    return orderer


def match_file_name(name: str, pattern: str = DEFAULT_FILE_PATTERN) -> tuple[str | None, dt.date | None] | None:
    """(orderer, delivery date) from ``name`` if it matches ``pattern`` (ASCII only), else None.

    The pattern's optional named groups ``orderer`` (a valid organisation number) and ``date``
    (YYYYMMDD, a real date) are read; a name that matches but carries an invalid one raises ValueError.
    """
    match = re.fullmatch(pattern, name, re.ASCII)
    if match is None:
        return None
    groups = match.groupdict()
    text = groups.get("date")
    try:
        day = dt.datetime.strptime(text, "%Y%m%d").date() if text else None
    except ValueError:
        raise ValueError(f"{name!r} matches the file pattern but {text!r} is not a date (YYYYMMDD)") from None
    orderer = groups.get("orderer")
    return (check_orderer(orderer) if orderer else None), day


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
        if self.orderer is not None:
            check_orderer(self.orderer)
        if self.size is not None and (not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"Remote file {self.name}: size {self.size!r} is not a whole number of bytes")
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
