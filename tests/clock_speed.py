"""A sandbox clock that changes speed at a given point of a run (tests of DAGs and operators)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def clock_speed_when(sandbox: Any, condition: Callable[[], bool], speed: float) -> Iterator[None]:
    """Set the sandbox clock's speed to ``speed`` once ``condition()`` holds (checked every 20 ms, in a thread).

    Should ``condition()`` raise, the speed is set all the same (a run waiting on the clock is not left hanging)
    and the error is raised when the block ends.

    ``condition()`` is checked once in the calling thread first: a condition that queries Airflow's metadata
    database makes SQLAlchemy configure the ORM on its first query, which imports Airflow's models under
    SQLAlchemy's configure lock; done first in the thread while the run imports those models (``DagBag``), it
    deadlocks (the run holds the import lock and waits for the configure lock, the thread the other way round).
    """
    done = threading.Event()
    errors: list[BaseException] = []

    def check() -> bool:
        try:
            met = condition()
        except BaseException as exc:
            errors.append(exc)
            met = True
        if met:
            sandbox.clock.set(speed=speed)
        return met

    def watch() -> None:
        while not done.wait(0.02):
            if check():
                return

    if check():
        done.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
    if errors:
        raise errors[0]
