"""Waiting in a test for what another thread or process does: synchronisation, not a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 1.0) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return that; fail naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval)
