"""Hostile E-transport listings and inbox folders: nothing is written outside the archive, one bad entry
never hides the real file. Real HTTPS with client certificates against the sandbox, real files."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.domain.remote_files import RemoteFile, UnsafeRemoteNameError
from airflow_provider_skattekonto.hooks.etransport import ETransportHook
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook
from tests.inbox_files import write_inbox_answer_file, write_stray_neighbours

MONDAY = dt.date(2026, 11, 30)
EVIL = b"import os\nos.system('touch /tmp/pwned')\n"
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()


def all_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def world(sandbox: Any, use_connection: Any, tmp_path: Path) -> dict[str, Path]:
    """Monday's real file is on E-transport; the archive sits beside a 'dags' folder it must never touch."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 1, 0, tzinfo=STOCKHOLM), speed=1.0)
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    archive = home / "skattekonto" / "archive"
    use_connection(archive_url=archive.as_uri())
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 5, tzinfo=STOCKHOLM))
    return {"home": home, "dags": home / "dags", "archive": archive, "tmp": tmp_path}


HOSTILE_ORDERERS = ["../../dags", "../../../airflow/dags", "/tmp", "..", "5560000167/../../../dags", "556000016"]


@pytest.mark.parametrize("orderer", HOSTILE_ORDERERS)
@pytest.mark.parametrize("name", ["evil.py", "SKAHMST_5560000167_20261130_009.txt"])
def test_listing_orderer_never_becomes_a_path(
    sandbox: Any, world: dict[str, Path], orderer: str, name: str, logs: Callable[[], str]
) -> None:
    entry = {"name": name, "size": len(EVIL), "sha256": EVIL_SHA, "orderer": orderer}
    entry["delivery_morning"] = "2026-11-30T07:00:00+01:00"
    sandbox.plant_listing_entry(entry, EVIL)
    hook = ETransportHook()
    listed = hook.list_files(delivery_date=MONDAY)
    assert [f.name for f in listed] == [f"SKAHMST_{hook.config.orderer_organisation_number}_20261130_001.txt"]
    assert name in logs()  # the skipped entry is named in a warning
    for remote in listed:
        hook.download(remote)
    outside = all_files(world["tmp"]) - all_files(world["archive"])
    assert outside == set(), f"files written outside the archive: {outside}"
    assert all(p.read_bytes() != EVIL for p in all_files(world["archive"]))


def test_a_name_outside_file_pattern_is_not_a_candidate(sandbox: Any, world: dict[str, Path]) -> None:
    sandbox.plant_listing_entry({"name": "evil.py", "size": len(EVIL), "sha256": EVIL_SHA}, EVIL)
    hook = ETransportHook()
    real = f"SKAHMST_{hook.config.orderer_organisation_number}_20261130_001.txt"
    assert [f.name for f in hook.list_files()] == [real]


@pytest.mark.parametrize("orderer", HOSTILE_ORDERERS)
def test_download_refuses_a_hostile_orderer_from_anywhere(world: dict[str, Path], orderer: str) -> None:
    """A RemoteFile built from XCom or a trigger event cannot carry a path either."""
    with pytest.raises(ValueError, match="organisation number"):
        RemoteFile.from_json({"name": "SKAHMST_5560000167_20261130_001.txt", "size": 1, "orderer": orderer})


def test_archive_path_stays_under_the_root_after_resolving(sandbox: Any, world: dict[str, Path]) -> None:
    """A folder inside the archive that is a link to elsewhere is not followed."""
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    assert remote.orderer is not None
    world["archive"].mkdir(parents=True)
    os.symlink(world["dags"], world["archive"] / remote.orderer)
    with pytest.raises(UnsafeRemoteNameError, match="outside the archive"):
        hook.download(remote)
    assert list(world["dags"].iterdir()) == []


STRAY_ENTRIES: list[Any] = [
    "not an object",
    None,
    ["SKAHMST_5560000167_20261130_002.txt"],
    {"size": 5},  # no name
    {"name": "SKAHMST_5560000167_20261399_002.txt", "size": 5},  # bad date
    {"name": "SKAHMST_5560000167_20261130_00\u0663.txt", "size": 5},  # Arabic-Indic digit
    {"name": "SKAHMST_\u0665\u0665\u0666\u0660\u0660\u0660\u0660\u0661\u0666\u0667_20261130_002.txt", "size": 5},
    {"name": "SKAHMST_5560000167_20261130_002.txt", "size": "many"},
    {"name": "SKAHMST_5560000167_20261130_002.txt", "size": -1},
    {"name": "SKAHMST_5560000167_20261130_002.txt", "sha256": "not-hex"},
    {"name": "SKAHMST_5560000167_20261130_002.txt", "delivered_at": "yesterday"},
    {"name": "SKAHMST_5560000167_20261130_002.txt", "orderer": "5567000012"},  # disagrees with the name
    {"name": "SKAHMST_0000000000_20261130_002.txt"},  # not an organisation number
]


def test_one_stray_entry_never_hides_the_real_file(
    sandbox: Any, world: dict[str, Path], logs: Callable[[], str]
) -> None:
    for entry in STRAY_ENTRIES:
        sandbox.plant_listing_entry(entry)
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    assert remote.name == f"SKAHMST_{hook.config.orderer_organisation_number}_20261130_001.txt"
    text = logs()
    assert text.count("Skipping listing entry") >= len(STRAY_ENTRIES) - 1
    assert "20261399" in text and "not a date" in text


@pytest.fixture
def inbox(sandbox: Any, use_connection: Any, tmp_path: Path) -> dict[str, Any]:
    """An inbox holding Monday's real answer file (with its .sha256), the clock on Monday 07:05."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 5, tzinfo=STOCKHOLM), speed=1.0)
    orderer = sandbox.pki.identity("orderer").organisation_number
    folder = tmp_path / "inbox"
    folder.mkdir()
    name = write_inbox_answer_file(
        folder, orderer, file_id="F1", seed=3, principals=3, transactions_per_principal=2
    ).name
    archive = tmp_path / "archive"
    use_connection(etransport_url=None, etransport_inbox=folder.as_uri(), archive_url=archive.as_uri())
    return {"folder": folder, "name": name, "orderer": orderer, "archive": archive, "tmp": tmp_path}


def test_inbox_symlinks_are_refused_and_logged(inbox: dict[str, Any], logs: Callable[[], str]) -> None:
    secret = inbox["tmp"] / "outside" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    orderer = inbox["orderer"]
    link = inbox["folder"] / f"SKAHMST_{orderer}_20261130_002.txt"  # newer sequence: would be picked first
    os.symlink(secret, link)
    os.symlink(inbox["folder"] / inbox["name"], inbox["folder"] / f"SKAHMST_{orderer}_20261130_003.txt")
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    assert remote.name == inbox["name"]
    assert "symbolic link" in logs() and link.name in logs()
    stored = hook.download(remote)
    assert Path(stored.path.removeprefix("file://")).read_bytes() == (inbox["folder"] / inbox["name"]).read_bytes()
    with pytest.raises(UnsafeRemoteNameError, match="symbolic link"):
        hook.download(RemoteFile(link.name, None, None, None, MONDAY, orderer))
    assert all(b"PRIVATE KEY" not in p.read_bytes() for p in all_files(inbox["archive"]))


def test_inbox_stray_neighbours_are_skipped(inbox: dict[str, Any], logs: Callable[[], str]) -> None:
    folder, orderer = inbox["folder"], inbox["orderer"]
    write_stray_neighbours(folder, orderer)
    hook = ETransportHook()
    assert [f.name for f in hook.list_files(delivery_date=MONDAY)] == [inbox["name"]]
    text = logs()
    for name in ("20261399", "_004.txt", "_005.txt", "0000000000", "_006.txt"):
        assert name in text
    assert [f.name for f in asyncio.run(hook.alist_files(delivery_date=MONDAY))] == [inbox["name"]]


def test_trigger_finds_the_real_file_among_stray_neighbours(inbox: dict[str, Any]) -> None:
    from airflow_provider_skattekonto.triggers.etransport import ETransportFileTrigger

    folder, orderer = inbox["folder"], inbox["orderer"]
    (folder / f"SKAHMST_{orderer}_20261130_004.txt").write_text("empty sidecar")
    (folder / f"SKAHMST_{orderer}_20261130_004.txt.sha256").write_text("")
    (folder / f"SKAHMST_{orderer}_20261130_00\u0665.txt").write_text("non-ASCII digit")

    async def first_event() -> Any:
        return await ETransportFileTrigger(delivery_morning="2026-11-30T07:00:00+01:00").run().__anext__()

    event = asyncio.run(first_event())
    assert event.payload["status"] == "found", event.payload
    assert [f["name"] for f in event.payload["files"]] == [inbox["name"]]


def test_stale_partial_downloads_are_removed(world: dict[str, Path], logs: Callable[[], str]) -> None:
    """A worker killed mid-download leaves a .part file: the next download of that file removes it."""
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    folder = world["archive"] / str(remote.orderer) / "2026-11-30"
    folder.mkdir(parents=True)
    stale = folder / f".{remote.name}.{'a' * 32}.part"
    stale.write_bytes(b"half a file")
    os.utime(stale, (1, 1))
    fresh = folder / f".{remote.name}.{'b' * 32}.part"  # another worker's download in progress: kept
    fresh.write_bytes(b"in progress")
    hook.download(remote)
    assert not stale.exists() and fresh.exists()
    assert "partial download" in logs()
