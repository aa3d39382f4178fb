"""Hostile-input drills: everything from outside tried against the real chain, counted for the hostile-input
table of ``docs/fault-drills.md`` (tried, accepted, files written outside the archive, secrets visible through
Airflow's REST API). Real HTTPS with client certificates against the sandbox, real files, real Airflow."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.remote_files import RemoteFile, UnsafeRemoteNameError
from airflow_provider_skattekonto.exceptions import ConfigurationError
from airflow_provider_skattekonto.hooks.etransport import DownloadTooLargeError, ETransportHook
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook
from tests.drills._support import MONDAY, ORDERER, stockholm
from tests.inbox_files import write_inbox_answer_file, write_stray_neighbours

EVIL = b"import os\nos.system('touch /tmp/pwned')\n"
EVIL_SHA = hashlib.sha256(EVIL).hexdigest()
REAL = f"SKAHMST_{ORDERER}_20261130_001.txt"


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def written_outside(tmp_path: Path, archive: Path, before: set[Path]) -> int:
    """Files that appeared under ``tmp_path`` during the drill but not in the archive."""
    return len(files_in(tmp_path) - before - files_in(archive))


@pytest.fixture
def monday_on_etransport(sandbox: Any, connect: Any, tmp_path: Path) -> dict[str, Path]:
    """Monday's real file on E-transport; an Airflow-like home whose archive sits beside a 'dags' folder."""
    sandbox.clock.set(now=stockholm(MONDAY, 1), speed=1.0)
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    archive = home / "skattekonto" / "archive"
    connect(archive_url=archive.as_uri())
    hook = SkattekontoHook()
    try:
        hook.bestall()
    finally:
        hook.close()
    sandbox.clock.set(now=stockholm(MONDAY, 7, 5))
    return {"archive": archive, "dags": home / "dags"}


HOSTILE_ORDERERS = ["../../dags", "../../../airflow/dags", "/tmp", "..", f"{ORDERER}/../../../dags", "556000016"]


def test_listing_orderers_never_become_paths(
    sandbox: Any, drill: Any, monday_on_etransport: dict[str, Path], tmp_path: Path
) -> None:
    drill.describe("hostile input", "E-transport listing entries whose orderer is a path (6 orderers x 2 names)")
    before = files_in(tmp_path)
    planted = 0
    for orderer in HOSTILE_ORDERERS:
        for name in ("evil.py", f"SKAHMST_{ORDERER}_20261130_009.txt"):
            entry = {"name": name, "size": len(EVIL), "sha256": EVIL_SHA, "orderer": orderer}
            sandbox.plant_listing_entry(entry | {"delivery_morning": "2026-11-30T07:00:00+01:00"}, EVIL)
            planted += 1
    hook = ETransportHook()
    try:
        listed = hook.list_files(delivery_date=MONDAY)
        for remote in listed:
            hook.download(remote)
    finally:
        hook.close()
    accepted = len([f for f in listed if f.name != REAL])
    outside = written_outside(tmp_path, monday_on_etransport["archive"], before)
    assert (accepted, outside) == (0, 0)
    assert not any(p.read_bytes() == EVIL for p in files_in(monday_on_etransport["archive"]))
    drill.hostile(
        "listing entry `orderer` `../../dags`, `/tmp`, `..`, `<orgnr>/../../../dags`, 9 digits...; name `evil.py` "
        "or a pattern name",
        tried=planted,
        accepted=accepted,
        outside=outside,
    )
    drill.result("each skipped with a warning naming it; only the real file archived", "archive: the real file only")


STRAY_ENTRIES: list[Any] = [
    "not an object",
    None,
    [REAL],
    {"size": 5},
    {"name": f"SKAHMST_{ORDERER}_20261399_002.txt", "size": 5},
    {"name": f"SKAHMST_{ORDERER}_20261130_00\u0663.txt", "size": 5},
    {"name": "SKAHMST_\u0665\u0665\u0666\u0660\u0660\u0660\u0660\u0661\u0666\u0667_20261130_002.txt", "size": 5},
    {"name": f"SKAHMST_{ORDERER}_20261130_002.txt", "size": "many"},
    {"name": f"SKAHMST_{ORDERER}_20261130_002.txt", "size": -1},
    {"name": f"SKAHMST_{ORDERER}_20261130_002.txt", "sha256": "not-hex"},
    {"name": f"SKAHMST_{ORDERER}_20261130_002.txt", "delivered_at": "yesterday"},
    {"name": f"SKAHMST_{ORDERER}_20261130_002.txt", "orderer": "5567000012"},
    {"name": "SKAHMST_0000000000_20261130_002.txt"},
    {"name": "../../dags/evil.py", "size": len(EVIL)},
    {"name": f"SKAHMST_{ORDERER}_20261130_002.txt\n", "size": 5},
]


def test_malformed_listing_entries_never_hide_the_real_file(
    sandbox: Any, drill: Any, monday_on_etransport: dict[str, Path], tmp_path: Path
) -> None:
    drill.describe("hostile input", f"{len(STRAY_ENTRIES)} malformed or hostile entries in an E-transport listing")
    before = files_in(tmp_path)
    for entry in STRAY_ENTRIES:
        sandbox.plant_listing_entry(entry)
    hook = ETransportHook()
    try:
        listed = hook.list_files(delivery_date=MONDAY)
        stored = [hook.download(remote) for remote in listed]
    finally:
        hook.close()
    assert [f.name for f in listed] == [REAL] and len(stored) == 1
    outside = written_outside(tmp_path, monday_on_etransport["archive"], before)
    drill.hostile(
        "malformed listing entries (not an object, no name, bad date, non-ASCII digits, bad size/sha256/timestamp, "
        "orderer disagreeing with the name, `0000000000`, a path, a trailing newline)",
        tried=len(STRAY_ENTRIES),
        accepted=len(listed) - 1,
        outside=outside,
    )
    drill.result("each skipped with a warning naming it; the real file was found and archived", "1 file archived")


@pytest.fixture
def inbox(connect: Any, tmp_path: Path) -> dict[str, Path]:
    """An inbox with Monday's real file (and its .sha256); the archive beside it; settle time 1 s."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    real = write_inbox_answer_file(
        folder, ORDERER, file_id="HOSTILE-1", seed=5, principals=3, transactions_per_principal=2
    )
    archive = tmp_path / "archive"
    connect(etransport_url=None, etransport_inbox=folder.as_uri(), archive_url=archive.as_uri(), inbox_settle_seconds=1)
    return {"folder": folder, "real": real, "archive": archive}


def test_inbox_links_and_stray_neighbours(drill: Any, inbox: dict[str, Path], tmp_path: Path) -> None:
    drill.describe("hostile input", "inbox: links named like answer files, and stray neighbours")
    folder = inbox["folder"]
    outside_file = tmp_path / "outside" / "secrets.txt"
    outside_file.parent.mkdir()
    outside_file.write_text("confidential, outside the inbox\n")
    os.symlink(outside_file, folder / f"SKAHMST_{ORDERER}_20261130_002.txt")
    os.symlink(inbox["real"], folder / f"SKAHMST_{ORDERER}_20261130_003.txt")
    tried = 2 + write_stray_neighbours(folder, ORDERER)
    before = files_in(tmp_path)
    hook = ETransportHook()
    try:
        listed = hook.list_files(delivery_date=MONDAY)
        stored = [hook.download(remote) for remote in listed]
        with pytest.raises(UnsafeRemoteNameError, match="symbolic link"):  # also when named directly
            hook.download(RemoteFile(f"SKAHMST_{ORDERER}_20261130_002.txt", None, None, None, MONDAY, ORDERER))
    finally:
        hook.close()
    assert [f.name for f in listed] == [REAL] and len(stored) == 1
    assert all(b"confidential" not in p.read_bytes() for p in files_in(inbox["archive"]))
    drill.hostile(
        "inbox: symbolic links (to a file outside the inbox, to the real file); bad date, non-ASCII digit, empty and "
        "non-hex `.sha256`, invalid orderer, a folder",
        tried=tried,
        accepted=len(listed) - 1,
        outside=written_outside(tmp_path, inbox["archive"], before),
    )
    drill.result("links refused (O_NOFOLLOW at download too), strays skipped, each named", "1 file archived")


def test_a_growing_inbox_file_is_not_taken(drill: Any, inbox: dict[str, Path], tmp_path: Path) -> None:
    drill.describe("hostile input", "inbox: a file still being written (no .sha256), and one not matching its .sha256")
    folder = inbox["folder"]
    growing = folder / f"SKAHMST_{ORDERER}_20261130_002.txt"
    mismatched = folder / f"SKAHMST_{ORDERER}_20261130_003.txt"
    mismatched.write_bytes(b"half of a file")
    (folder / f"{mismatched.name}.sha256").write_text(hashlib.sha256(b"half of a file, and the rest").hexdigest())
    hook = ETransportHook()
    taken_while_incomplete = 0
    try:
        # a first listing before the growing file exists: its one-off start-up cost must not pass for settle time
        assert mismatched.name not in [f.name for f in hook.list_files(delivery_date=MONDAY)]
        with growing.open("wb") as writer:
            for _ in range(3):
                writer.write(b"x" * 4096)
                writer.flush()
                names = [f.name for f in hook.list_files(delivery_date=MONDAY)]
                taken_while_incomplete += growing.name in names or mismatched.name in names
                time.sleep(0.3)
        time.sleep(1.2)
        names = [f.name for f in hook.list_files(delivery_date=MONDAY)]
    finally:
        hook.close()
    assert taken_while_incomplete == 0
    assert growing.name in names and mismatched.name not in names  # settled: taken whole; the mismatch never
    drill.hostile(
        "inbox file still being written (no `.sha256`; size and mtime not yet settled), and one whose bytes do not "
        "match its `.sha256`",
        tried=2,
        accepted=taken_while_incomplete,
        outside=0,
    )
    drill.result("not taken while incomplete; the growing file was taken whole once settled", "-")


def test_changed_bytes_never_overwrite_an_archived_file(drill: Any, inbox: dict[str, Path], tmp_path: Path) -> None:
    drill.describe("hostile input", "inbox: the same name delivered again with other bytes, no .sha256")
    folder = inbox["folder"]
    name = f"SKAHMST_{ORDERER}_20261130_004.txt"
    os.utime(folder, None)
    (folder / name).write_bytes(b"first bytes\n")
    old = time.time() - 60
    os.utime(folder / name, (old, old))
    hook = ETransportHook()
    try:
        [first] = [f for f in hook.list_files(delivery_date=MONDAY) if f.name == name]
        kept = hook.download(first)
        (folder / name).write_bytes(b"other bytes, same name\n")
        os.utime(folder / name, (old, old))
        [second] = [f for f in hook.list_files(delivery_date=MONDAY) if f.name == name]
        new = hook.download(second)
    finally:
        hook.close()
    overwritten = int(Path(kept.path.removeprefix("file://")).read_bytes() != b"first bytes\n")
    assert overwritten == 0 and new.path != kept.path
    drill.hostile(
        "the same file name delivered again with other bytes (no sha256 listed)",
        tried=1,
        accepted=overwritten,
        outside=0,
    )
    drill.result("both kept: the new bytes under a name with their SHA-256 prefix, with a warning", "2 files archived")


def test_a_listing_entry_without_size_is_capped(
    sandbox: Any, drill: Any, monday_on_etransport: dict[str, Path], tmp_path: Path, connect: Any
) -> None:
    drill.describe("hostile input", "E-transport entry without size serving 3 MiB; max_download_mib 1")
    connect(archive_url=monday_on_etransport["archive"].as_uri(), max_download_mib=1)
    name = f"SKAHMST_{ORDERER}_20261130_007.txt"
    sandbox.plant_listing_entry({"name": name, "delivery_morning": "2026-11-30T07:00:00+01:00"}, os.urandom(3 << 20))
    before = files_in(tmp_path)
    hook = ETransportHook()
    try:
        [remote] = [f for f in hook.list_files(delivery_date=MONDAY) if f.name == name]
        with pytest.raises(DownloadTooLargeError) as caught:
            hook.download(remote)
    finally:
        hook.close()
    drill.scan(caught.value)
    archived = files_in(monday_on_etransport["archive"])
    assert archived == set()  # not even a partial file
    drill.hostile(
        "a listing entry without `size` that streams past the download cap",
        tried=1,
        accepted=len(archived),
        outside=written_outside(tmp_path, monday_on_etransport["archive"], before),
    )
    drill.result(f"DownloadTooLargeError, not retried: {str(caught.value)[:80]}...", "archive empty (no .part)")


PLAINTEXT = ["http://files.example.org/inbox/", "ftp://user:pw-1f3a@ftp.example.org/in", "webdav://x/y", "smb://s/y"]


def test_plaintext_storage_urls_are_refused(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("hostile input", "plaintext etransport_inbox / archive_url (http, ftp, webdav, smb)")
    accepted = 0
    for field in ("etransport_inbox", "archive_url"):
        for url in PLAINTEXT:
            connect(etransport_url=None, **{field: url})
            hook = ETransportHook()
            try:
                hook.list_files()
                accepted += 1
            except ConfigurationError as exc:
                assert field in str(exc) and "pw-1f3a" not in str(exc)
                drill.scan(exc)
    assert accepted == 0
    drill.hostile(
        "`etransport_inbox` / `archive_url` with a plaintext scheme (`http://`, `ftp://` with credentials, "
        "`webdav://`, `smb://`)",
        tried=2 * len(PLAINTEXT),
        accepted=accepted,
        outside=0,
    )
    drill.result("ConfigurationError naming the field; credentials in the URL never repeated", "-")


def test_connection_secrets_through_the_rest_api(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("hostile input", "every secret of a connection, read back through Airflow's REST API")
    inline = base64.b64encode(sandbox.pki.identity("orderer").p12_path.read_bytes()).decode()
    connect(grant_type="refresh_token", certificate_p12_path=None, certificate_p12_secret_base64=inline)
    drill.watch("certificate_p12_secret_base64", inline)
    hook = SkattekontoHook()
    try:
        assert hook.get_token()
    finally:
        hook.close()
    drill.hostile(
        "a connection read through Airflow's REST API: OAuth2 secret, `api_client_secret`, `refresh_token`, the PIN, "
        "the inline PKCS#12 (`certificate_p12_secret_base64`)",
        tried=5,
        accepted=0,
        outside=0,
    )
    drill.result("all masked by Airflow (ConnectionResponse); the token was fetched with them", "-")


@pytest.mark.airflow_db
def test_a_rotated_refresh_token_is_kept_and_masked(sandbox: Any, connect: Any, drill: Any, airflow_db: Any) -> None:
    from airflow.models.variable import Variable

    from tests.rest_api import api_client

    drill.describe("hostile input", "the token endpoint rotates the refresh token on every refresh (3 runs)")
    key = SkattekontoHook.refresh_token_variable("skattekonto_default")
    Variable.delete(key)
    sandbox.configure(rotate_refresh_tokens=True)
    connect(grant_type="refresh_token")
    original = sandbox.registration("orderer").refresh_token
    runs = 0
    for _ in range(3):
        hook = SkattekontoHook()
        try:
            assert hook.get_token()
            runs += 1
        finally:
            hook.close()
    current = sandbox.registration("orderer").refresh_token
    assert current != original
    drill.watch("rotated refresh token", current)

    def variable_through_the_api() -> str:
        with api_client() as client:
            return str(client.get(f"/api/v2/variables/{key}").text)

    drill.api_text(variable_through_the_api)
    shown = variable_through_the_api()
    assert key in shown and '\\"refresh_token\\": \\"***\\"' in shown and current not in shown, shown
    drill.check_secrets()  # now, while the Variable exists (and again at teardown)
    Variable.delete(key)  # do not leak into later tests
    drill.hostile(
        "a rotated refresh token (the old one stops working): must be kept for the next run and never shown",
        tried=1,
        accepted=0,
        outside=0,
    )
    drill.result(f"{runs} runs in a row authenticated; the token is in a masked Variable", "0 tokens lost")
