"""Untrusted file sources: plaintext storage refused, downloads capped, archived files never overwritten,
inbox files taken only once complete. Real HTTPS with client certificates against the sandbox, real files."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.exceptions import ConfigurationError
from airflow_provider_skattekonto.hooks.etransport import DownloadTooLargeError, ETransportHook
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

MONDAY = dt.date(2026, 11, 30)
MIB = 1024 * 1024


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ plaintext storage schemes


PLAINTEXT = [
    "http://files.example.org/inbox/",
    "ftp://user:hunter2@ftp.example.org/inbox",
    "HTTP://files.example.org/x",
    "webdav://files.example.org/x",
    "smb://server/share",
]


@pytest.mark.parametrize("field", ["etransport_inbox", "archive_url"])
@pytest.mark.parametrize("url", PLAINTEXT)
def test_plaintext_storage_is_refused_naming_the_field(sandbox: Any, use_connection: Any, field: str, url: str) -> None:
    use_connection(etransport_url=None, **{field: url})
    with pytest.raises(ConfigurationError) as caught:
        ETransportHook().list_files()
    text = str(caught.value)
    assert f"extra {field!r}" in text and "refused" in text
    assert "hunter2" not in text  # credentials in the URL are never repeated


@pytest.mark.parametrize(
    "url", ["s3://bucket/inbox/", "gs://bucket/x", "gcs://bucket/x", "abfs://c@acct/x", "az://c/x", "file:///srv/x"]
)
def test_object_stores_and_local_paths_are_accepted(
    sandbox: Any, use_connection: Any, url: str, tmp_path: Path
) -> None:
    use_connection(etransport_url=None, etransport_inbox=url, archive_url=str(tmp_path / "archive"))
    config = SkattekontoHook().config
    assert (config.etransport_inbox, config.archive_url) == (url, str(tmp_path / "archive"))


# ------------------------------------------------------------------ a listing entry without size


@pytest.fixture
def monday(sandbox: Any, use_connection: Any, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Monday 07:05 on the sandbox; ``monday(**extras)`` registers the connection (archive in tmp_path)."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 5, tzinfo=STOCKHOLM), speed=1.0)

    def connect(**extras: Any) -> dict[str, Any]:
        return use_connection(archive_url=(tmp_path / "archive").as_uri(), **extras)

    return connect


def test_a_listing_entry_without_size_is_capped(
    sandbox: Any, monday: Callable[..., Any], tmp_path: Path, logs: Callable[[], str]
) -> None:
    monday(max_download_mib=1)
    content = os.urandom(3 * MIB)
    name = "SKAHMST_5560000167_20261130_007.txt"
    sandbox.plant_listing_entry({"name": name, "delivery_morning": "2026-11-30T07:00:00+01:00"}, content)
    hook = ETransportHook()
    [remote] = [f for f in hook.list_files(delivery_date=MONDAY) if f.name == name]
    assert remote.size is None and remote.sha256 is None
    with pytest.raises(DownloadTooLargeError, match="max_download_mib") as caught:
        hook.download(remote)
    assert not caught.value.retryable
    assert files_under(tmp_path / "archive") == []  # no partial file left behind


def test_the_hook_argument_overrides_the_cap_and_a_listed_size_over_it_fails_before_any_byte(
    sandbox: Any, monday: Callable[..., Any], tmp_path: Path
) -> None:
    monday()
    content = os.urandom(2 * MIB)
    name = "SKAHMST_5560000167_20261130_007.txt"
    entry = {"name": name, "size": len(content), "delivery_morning": "2026-11-30T07:00:00+01:00"}
    sandbox.plant_listing_entry(entry, content)
    hook = ETransportHook(max_download_mib=0.5)
    [remote] = [f for f in hook.list_files(delivery_date=MONDAY) if f.name == name]
    served = sandbox.stats()["bytes_served"]
    with pytest.raises(DownloadTooLargeError, match="the listing gives 2097152 bytes"):
        hook.download(remote)
    assert sandbox.stats()["bytes_served"] == served
    assert files_under(tmp_path / "archive") == []
    stored = ETransportHook().download(remote)  # the default cap (512 MiB) lets it through
    assert stored.size == len(content)


# ------------------------------------------------------------------ never overwrite an archived file


@pytest.fixture
def plain_inbox(use_connection: Any, tmp_path: Path) -> dict[str, Any]:
    """An inbox without checksum files (settle time 0) and an archive, both in tmp_path."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    archive = tmp_path / "archive"
    use_connection(
        etransport_url=None, etransport_inbox=folder.as_uri(), archive_url=archive.as_uri(), inbox_settle_seconds=0
    )
    return {"folder": folder, "archive": archive, "name": "SKAHMST_5560000167_20261130_001.txt"}


def test_an_archived_file_is_never_overwritten_with_other_bytes(
    plain_inbox: dict[str, Any], logs: Callable[[], str]
) -> None:
    folder, name = plain_inbox["folder"], plain_inbox["name"]
    first, second = b"first delivery\n", b"second, different delivery\n"
    (folder / name).write_bytes(first)
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    assert remote.sha256 is None
    kept = hook.download(remote)
    assert Path(kept.path.removeprefix("file://")).read_bytes() == first

    (folder / name).write_bytes(second)
    [remote] = hook.list_files(delivery_date=MONDAY)
    new = hook.download(remote)
    assert Path(kept.path.removeprefix("file://")).read_bytes() == first  # untouched
    new_path = Path(new.path.removeprefix("file://"))
    assert new_path.read_bytes() == second and new_path.name != name and not new.already_archived
    assert new_path.name == f"SKAHMST_5560000167_20261130_001.{hashlib.sha256(second).hexdigest()[:16]}.txt"
    assert "nothing was overwritten: both are kept" in logs()

    again = hook.download(remote)  # the same bytes once more: a no-op
    assert again.already_archived and again.path == new.path
    assert len(files_under(plain_inbox["archive"])) == 2


def test_the_same_bytes_again_are_a_no_op(plain_inbox: dict[str, Any]) -> None:
    folder, name = plain_inbox["folder"], plain_inbox["name"]
    (folder / name).write_bytes(b"one delivery\n")
    hook = ETransportHook()
    [remote] = hook.list_files(delivery_date=MONDAY)
    first = hook.download(remote)
    mtime = Path(first.path.removeprefix("file://")).stat().st_mtime_ns
    second = hook.download(remote)
    assert second.already_archived and second.path == first.path
    assert Path(first.path.removeprefix("file://")).stat().st_mtime_ns == mtime
    assert len(files_under(plain_inbox["archive"])) == 1


# ------------------------------------------------------------------ inbox files still being written


def test_a_growing_inbox_file_is_taken_only_once_it_settles(
    use_connection: Any, tmp_path: Path, logs: Callable[[], str]
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    name = "SKAHMST_5560000167_20261130_001.txt"
    use_connection(
        etransport_url=None,
        etransport_inbox=folder.as_uri(),
        archive_url=(tmp_path / "archive").as_uri(),
        inbox_settle_seconds=1.0,
    )
    hook = ETransportHook()
    # A first listing before the file exists: its one-off start-up cost (imports, the connection) must not pass
    # for the settle time between a write and the listing after it.
    assert hook.list_files(delivery_date=MONDAY) == []
    with (folder / name).open("wb") as writer:
        for _ in range(4):
            writer.write(b"x" * 1000)
            writer.flush()
            assert hook.list_files(delivery_date=MONDAY) == []  # still growing
            time.sleep(0.3)
        writer.write(b"the end\n")
    assert "inbox_settle_seconds" in logs()
    time.sleep(1.1)
    [remote] = hook.list_files(delivery_date=MONDAY)
    assert remote.size == 4008
    stored = hook.download(remote)
    assert stored.size == 4008


def test_an_inbox_file_with_a_matching_checksum_file_is_taken_at_once(
    use_connection: Any, tmp_path: Path, logs: Callable[[], str]
) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    name = "SKAHMST_5560000167_20261130_001.txt"
    full = b"y" * 5000
    use_connection(
        etransport_url=None,
        etransport_inbox=folder.as_uri(),
        archive_url=(tmp_path / "archive").as_uri(),
        inbox_settle_seconds=3600,
    )
    (folder / f"{name}.sha256").write_text(f"{hashlib.sha256(full).hexdigest()}  {name}\n")
    (folder / name).write_bytes(full[:2000])  # the checksum file came first; the file is half written
    hook = ETransportHook()
    assert hook.list_files(delivery_date=MONDAY) == []
    assert "do not match its .sha256 file" in logs()
    with (folder / name).open("ab") as writer:
        writer.write(full[2000:])
    [remote] = hook.list_files(delivery_date=MONDAY)  # complete: no settle wait needed
    assert (remote.size, remote.sha256) == (5000, hashlib.sha256(full).hexdigest())


def test_other_bytes_under_a_name_of_the_longest_length_are_kept_too(use_connection: Any, tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    name = "A" * 196 + ".txt"  # 200 characters: the longest name accepted
    use_connection(
        etransport_url=None,
        etransport_inbox=folder.as_uri(),
        archive_url=(tmp_path / "archive").as_uri(),
        inbox_settle_seconds=0,
    )
    hook = ETransportHook(file_pattern=r"A+\.txt")
    stored = []
    for content in (b"first\n", b"second\n"):
        (folder / name).write_bytes(content)
        [remote] = hook.list_files()
        stored.append(hook.download(remote))
    paths = [Path(s.path.removeprefix("file://")) for s in stored]
    assert [p.read_bytes() for p in paths] == [b"first\n", b"second\n"]
    digest = hashlib.sha256(b"second\n").hexdigest()
    assert len(paths[1].name) == 200 and paths[1].name.endswith(f"A.{digest[:16]}.txt")
