"""The canonical text form of the timestamps the warehouse stores and compares. No Airflow import."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow_provider_skattekonto.loading.names import SnapshotLoadError

_UTC = dt.timezone.utc


def _ts(value: dt.datetime) -> str:
    """Canonical text form of an aware datetime: UTC, microseconds, '+00:00' (sorts as text)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise SnapshotLoadError(f"Naive datetime {value.isoformat()} given: timestamps must be timezone-aware.")
    return value.astimezone(_UTC).isoformat(timespec="microseconds")


def _stored_ts(value: Any) -> str:
    """Canonical text form of a timestamp read back from any dialect (datetime or ISO text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return _ts(value)
