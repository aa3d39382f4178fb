"""Inbox folders for tests: a real answer file with its ``.sha256`` sidecar, and hostile neighbours."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.sandbox.data import write_answer_file

MONDAY_MORNING = dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)


def write_inbox_answer_file(
    folder: Path,
    orderer: str,
    *,
    file_id: str,
    seed: int,
    principals: int,
    transactions_per_principal: int,
    morning: dt.datetime = MONDAY_MORNING,
) -> Path:
    """Monday's answer file ``SKAHMST_<orderer>_<date>_001.txt`` in ``folder``, with its ``.sha256`` sidecar
    (written, as E-transport clients do, after the file)."""
    path = folder / f"SKAHMST_{orderer}_{morning:%Y%m%d}_001.txt"
    _, sha256 = write_answer_file(
        path,
        orderer=orderer,
        delivery_morning=morning,
        created_at=morning - dt.timedelta(minutes=20),
        file_id=file_id,
        seed=seed,
        principals=principals,
        transactions_per_principal=transactions_per_principal,
    )
    (folder / f"{path.name}.sha256").write_text(f"{sha256}  {path.name}\n")
    return path


def write_stray_neighbours(folder: Path, orderer: str) -> int:
    """Entries beside Monday's file that must each be skipped with a warning; returns how many.

    A bad date, a non-ASCII digit, an empty and a non-hex ``.sha256`` sidecar, a name whose orderer is not
    an organisation number, and a folder with a matching name.
    """
    (folder / f"SKAHMST_{orderer}_20261399_001.txt").write_text("bad date")
    (folder / f"SKAHMST_{orderer}_20261130_00\u0663.txt").write_text("non-ASCII digit")
    (folder / f"SKAHMST_{orderer}_20261130_004.txt").write_text("empty sidecar")
    (folder / f"SKAHMST_{orderer}_20261130_004.txt.sha256").write_text("")
    (folder / f"SKAHMST_{orderer}_20261130_005.txt").write_text("non-hex sidecar")
    (folder / f"SKAHMST_{orderer}_20261130_005.txt.sha256").write_text("z" * 64)
    (folder / "SKAHMST_0000000000_20261130_001.txt").write_text("not an organisation number")
    (folder / f"SKAHMST_{orderer}_20261130_006.txt").mkdir()
    return 6
