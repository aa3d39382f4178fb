"""ETransportHook against the sandbox's E-transport (real HTTPS, client certificates) and an inbox folder."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.domain.remote_files import RemoteFile, UnsafeRemoteNameError, check_remote_name
from airflow_provider_skattekonto.exceptions import ConfigurationError
from airflow_provider_skattekonto.hooks.etransport import DownloadError, ETransportHook, _remote_from_listing
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

MONDAY = dt.date(2026, 11, 30)


@pytest.fixture
def delivered(sandbox: Any, use_connection: Any, tmp_path: Path) -> ETransportHook:
    """An order placed Monday 01:00 and the clock at 07:05: Monday's file is on E-transport."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 1, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(archive_url=(tmp_path / "archive").as_uri())
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 5, tzinfo=STOCKHOLM))
    return ETransportHook(download_attempts=3)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_list_and_download_atomically(delivered: ETransportHook, tmp_path: Path) -> None:
    [remote] = delivered.list_files(delivery_date=MONDAY)
    assert remote.delivery_date == MONDAY and remote.size and remote.sha256
    assert remote.orderer == delivered.config.orderer_organisation_number
    stored = delivered.download(remote)
    path = Path(stored.path.removeprefix("file://"))
    assert path.read_bytes()[:2] == b"H;" or path.stat().st_size == remote.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == remote.sha256 == stored.sha256
    assert files_in(tmp_path / "archive") == [remote.name]  # no temporary file left behind
    again = delivered.download(remote)
    assert again.already_archived and again.path == stored.path


def test_nothing_before_seven_or_on_other_mornings(delivered: ETransportHook, sandbox: Any) -> None:
    assert delivered.list_files(delivery_date=dt.date(2026, 12, 1)) == []
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 6, 55, tzinfo=STOCKHOLM))
    assert ETransportHook().list_files(delivery_date=MONDAY) == []


@pytest.mark.parametrize("kind", ["truncate", "drop_mid_response"])
def test_broken_stream_resumes(delivered: ETransportHook, sandbox: Any, tmp_path: Path, kind: str) -> None:
    [remote] = delivered.list_files(delivery_date=MONDAY)
    sandbox.faults.add(kind, "etransport_download")
    stored = delivered.download(remote)
    path = Path(stored.path.removeprefix("file://"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == remote.sha256
    assert files_in(tmp_path / "archive") == [remote.name]


def test_corrupt_download_is_fetched_again(delivered: ETransportHook, sandbox: Any) -> None:
    [remote] = delivered.list_files(delivery_date=MONDAY)
    sandbox.faults.add("corrupt", "etransport_download")
    assert delivered.download(remote).sha256 == remote.sha256


def test_always_corrupt_fails_and_leaves_nothing(delivered: ETransportHook, sandbox: Any, tmp_path: Path) -> None:
    [remote] = delivered.list_files(delivery_date=MONDAY)
    sandbox.faults.add("corrupt", "etransport_download", times=None)
    with pytest.raises(DownloadError, match="corrupt") as caught:
        delivered.download(remote)
    assert "Nothing was archived" in str(caught.value)
    assert files_in(tmp_path / "archive") == []


def test_duplicate_listing_is_one_file(delivered: ETransportHook, sandbox: Any) -> None:
    sandbox.faults.add("duplicate_listing", "etransport_list")
    assert len(delivered.list_files(delivery_date=MONDAY)) == 1


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "/etc/passwd", "a/b.txt", "a\\b.txt", "..", "bad\x00name", "x\n.txt", "", ".hidden"]
)
def test_hostile_remote_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeRemoteNameError, match="Refusing remote file name"):
        check_remote_name(name)
    with pytest.raises(UnsafeRemoteNameError):
        _remote_from_listing({"name": name, "size": 1}, "skahmst", ".*")


def test_inbox_source(sandbox: Any, use_connection: Any, tmp_path: Path) -> None:
    from airflow_provider_skattekonto.sandbox.data import write_answer_file

    orderer = sandbox.pki.identity("orderer").organisation_number
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    name = f"SKAHMST_{orderer}_20261130_001.txt"
    morning = dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)
    size, sha256 = write_answer_file(
        inbox / name,
        orderer=orderer,
        delivery_morning=morning,
        created_at=morning - dt.timedelta(minutes=30),
        file_id="F1",
        seed=3,
        principals=5,
        transactions_per_principal=4,
    )
    (inbox / f"{name}.sha256").write_text(f"{sha256}  {name}\n")
    (inbox / "README.txt").write_text("not an answer file")
    use_connection(etransport_url=None, etransport_inbox=inbox.as_uri(), archive_url=(tmp_path / "arch").as_uri())
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    assert (remote.name, remote.size, remote.sha256) == (name, size, sha256)
    stored = hook.download(remote)
    assert Path(stored.path.removeprefix("file://")).read_bytes() == (inbox / name).read_bytes()


def test_source_must_be_configured(sandbox: Any, use_connection: Any) -> None:
    use_connection(etransport_url=None)
    with pytest.raises(ConfigurationError, match="no E-transport source"):
        ETransportHook().list_files()


def test_remote_file_json_round_trip() -> None:
    remote = RemoteFile("SKAHMST_5560000167_20261130_001.txt", 10, "0" * 64, None, MONDAY, "5560000167")
    assert RemoteFile.from_json(remote.to_json()) == remote


def test_download_into_non_local_object_storage(delivered: ETransportHook, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsspec's in-memory filesystem stands in for S3/GCS (whose providers register their schemes the same way)."""
    import fsspec
    from airflow.sdk import ObjectStoragePath

    try:
        from airflow.sdk.io import fs as airflow_fs
    except ImportError:  # Airflow 3.0: the filesystem registry lives in core
        import airflow.io as airflow_fs

    monkeypatch.setitem(airflow_fs._register_filesystems(), "memory", lambda conn_id: fsspec.filesystem("memory"))
    [remote] = delivered.list_files(delivery_date=MONDAY)
    target = ObjectStoragePath("memory://skattekonto-archive/5560000167/")
    stored = delivered.download(remote, target)
    assert stored.path.startswith("memory://")
    data = ObjectStoragePath(stored.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == remote.sha256
    assert [p.name for p in target.iterdir()] == [remote.name]  # no temporary part left
