"""ETransportHook: list and download answer files from E-transport (or an inbox folder) into an archive.

E-transport's protocol is not public, so a *delivery source* sits behind one small interface
(:class:`DeliverySource`) with two bindings:

* :class:`HttpsSource` (``etransport_url``): HTTPS with the organisation certificate (mutual TLS).
  Assumed protocol (what the sandbox speaks): ``GET {url}/files?kind=skahmst&morning=YYYY-MM-DD``
  answers ``{"files": [{"name", "size", "sha256", "delivered_at", ...}]}``; ``GET {url}/files/{name}``
  streams the bytes and honours ``Range: bytes=N-``.
* :class:`InboxSource` (``etransport_inbox``): a folder or object-storage URL where an organisation's
  own E-transport client drops files; an optional ``<name>.sha256`` beside a file gives its checksum.

Downloads stream into the archive (``archive_url``, an Airflow ObjectStoragePath; ``file://`` by
default) under a temporary name, verify size and SHA-256, then rename: a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx

from airflow_provider_skattekonto.checksums import sha256_of
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.domain.remote_files import (
    DEFAULT_FILE_PATTERN,
    RemoteFile,
    UnsafeRemoteNameError,
    check_orderer,
    check_remote_name,
    match_file_name,
)
from airflow_provider_skattekonto.exceptions import ConfigurationError, SkattekontoApiError, SkattekontoError
from airflow_provider_skattekonto.hooks._protocol import Call, Plan, RequestSpec, tls_failure
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_skattekonto.hooks._connection import SkattekontoConnectionConfig

CHUNK_SIZE = 1 << 20
MAX_NAME_LENGTH = 200  # what check_remote_name accepts
STALE_PART_SECONDS = 600.0  # a partial download untouched this long belongs to a killed worker


class DownloadError(SkattekontoError):
    """A download that stayed incomplete or corrupt after its retries; nothing was archived."""

    retryable = True


class DownloadTooLargeError(DownloadError):
    """A file larger than the download cap (``max_download_mib``); nothing was archived. Not retried."""

    retryable = False


@dataclass(frozen=True)
class StoredFile:
    """An answer file safely in the archive."""

    file: RemoteFile
    path: str  # ObjectStoragePath URL
    sha256: str
    size: int
    already_archived: bool = False

    def to_xcom(self) -> dict[str, Any]:
        """JSON-simple form for XCom (what the loader reads)."""
        return self.file.to_json() | {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "already_archived": self.already_archived,
        }


class DeliverySource(Protocol):
    """Where answer files come from."""

    description: str

    def list_plan(
        self,
        hook: ETransportHook,
        config: SkattekontoConnectionConfig,
        *,
        delivery_date: dt.date | None,
        kind: str,
    ) -> Plan:
        """A plan returning the files on offer (``list[RemoteFile]``)."""
        ...

    def open_stream(self, hook: ETransportHook, file: RemoteFile, offset: int) -> Iterator[bytes]:
        """The file's bytes from ``offset`` (sync; raises on a broken stream)."""
        ...

    def file_url(self, file: RemoteFile) -> str:
        """Where ``file`` lives at the source (for lineage and messages)."""
        ...


class HttpsSource:
    """E-transport over HTTPS with the organisation certificate."""

    def __init__(self, url: str, file_pattern: str) -> None:
        self.url = url.rstrip("/")
        self.file_pattern = file_pattern
        self.description = f"E-transport at {self.url}"

    def list_plan(
        self,
        hook: ETransportHook,
        config: SkattekontoConnectionConfig,
        *,
        delivery_date: dt.date | None,
        kind: str,
    ) -> Plan:
        query = f"?kind={quote(kind)}" + (f"&morning={delivery_date.isoformat()}" if delivery_date else "")

        def build(_: object) -> RequestSpec:
            return RequestSpec("GET", f"{self.url}/files{query}", headers={"Accept": "application/json"})

        reply = yield from hook._exchange_plan(config, build, authenticated=False, quiet=True)
        try:
            entries = reply.json()["files"]
            if not isinstance(entries, list):
                raise TypeError(f"'files' is a {type(entries).__name__}, not a list")
        except (KeyError, TypeError, ValueError) as exc:
            raise SkattekontoApiError(
                f"{self.description} answered a file listing this provider cannot read ({exc})",
                status=reply.status,
                advice="Check etransport_url; the listing must be {'files': [{'name', 'size', 'sha256', ...}]}.",
            ) from None
        files = []
        for entry in entries:
            try:
                remote = _remote_from_listing(entry, kind, self.file_pattern)
            except (KeyError, TypeError, ValueError) as exc:
                hook.log.warning("Skipping listing entry %s of %s: %s", _describe(entry), self.description, exc)
                continue
            if remote is None:
                hook.log.info("Ignoring %s: its name does not match file_pattern", _describe(entry))
                continue
            files.append(remote)
        return _unique(files)

    def file_url(self, file: RemoteFile) -> str:
        return f"{self.url}/files/{quote(check_remote_name(file.name))}"

    def open_stream(self, hook: ETransportHook, file: RemoteFile, offset: int) -> Iterator[bytes]:
        client = hook.get_conn()
        headers = {"Accept": "*/*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        url = f"{self.url}/files/{quote(file.name)}"
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code not in (200, 206):
                response.read()
                raise SkattekontoApiError(
                    f"GET {url} answered HTTP {response.status_code}",
                    status=response.status_code,
                    service_message=response.text[:200],
                    advice="410/404: E-transport no longer keeps this file (see the sensor's when_missing).",
                    retryable=response.status_code >= 500 or response.status_code == 429,
                )
            if offset and response.status_code == 200:
                raise _RestartDownload()
            yield from response.iter_bytes(CHUNK_SIZE)


class InboxSource:
    """A folder or object-storage prefix filled by the organisation's own E-transport client."""

    def __init__(self, url: str, file_pattern: str, settle_seconds: float = 0.0) -> None:
        self.url = url
        self.file_pattern = file_pattern
        self.settle_seconds = settle_seconds
        self.description = f"E-transport inbox {url}"

    def _root(self) -> ObjectStoragePath:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.url)

    def _scan(self, delivery_date: dt.date | None, kind: str, log: Any) -> list[RemoteFile]:
        """The answer files in the inbox; every stray or hostile entry is skipped with a warning naming it."""
        root = self._root()
        if not root.exists():
            raise ConfigurationError(f"{self.description} does not exist; create it or fix etransport_inbox")
        files = []
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            try:
                matched = match_file_name(entry.name, self.file_pattern)
                if matched is None:
                    continue
                _check_plain_file(root, entry)
                orderer, day = matched
                if delivery_date is not None and day != delivery_date:
                    continue
                checksum = _read_sidecar(root, root / f"{entry.name}.sha256")
                info = entry.stat()
                waiting = self._incomplete(root, entry, info.st_size, info.st_mtime, checksum)
                if waiting:
                    log.info("Not taking inbox file %s yet: %s", repr(entry.name)[:120], waiting)
                    continue
                files.append(
                    RemoteFile(
                        name=check_remote_name(entry.name),
                        size=info.st_size,
                        sha256=checksum,
                        delivered_at=dt.datetime.fromtimestamp(info.st_mtime, STOCKHOLM),
                        delivery_date=day,
                        orderer=orderer,
                        kind=kind,
                    )
                )
            except (OSError, ValueError) as exc:
                log.warning("Skipping inbox entry %s of %s: %s", repr(entry.name)[:120], self.description, exc)
        return files

    def _incomplete(
        self, root: ObjectStoragePath, entry: ObjectStoragePath, size: int, mtime: float, checksum: str | None
    ) -> str | None:
        """Why ``entry`` may still be being written (None when it is complete).

        Complete means: its ``.sha256`` sidecar is present and matches its bytes; or, without a sidecar, its
        size and mtime have stayed the same for ``settle_seconds`` (``inbox_settle_seconds``). Object stores
        publish an object only once its upload is complete, so there the sidecar check alone applies.
        """
        key = (self.url, entry.name)
        if checksum is not None:
            actual = _INBOX_HASHES.get((*key, size, mtime))
            if actual is None:
                with entry.open("rb") as handle:
                    actual = sha256_of(handle)[0]
                if len(_INBOX_HASHES) > 1000:
                    _INBOX_HASHES.clear()
                _INBOX_HASHES[(*key, size, mtime)] = actual
            if actual == checksum:
                return None
            return (
                f"its bytes ({size}, sha256 {actual[:12]}...) do not match its .sha256 file: still being written, "
                "or corrupt; it is taken once they match"
            )
        if self.settle_seconds <= 0 or root.protocol not in ("file", "local", ""):
            return None
        now = time.time()
        seen = _INBOX_SEEN.get(key)
        if seen is None or seen[:2] != (size, mtime):
            if len(_INBOX_SEEN) > 1000:
                _INBOX_SEEN.clear()
            seen = _INBOX_SEEN[key] = (size, mtime, now)
        unchanged_for = max(now - mtime, now - seen[2])
        if unchanged_for >= self.settle_seconds:
            return None
        return (
            f"it changed {max(0.0, now - mtime):.1f} s ago ({size} bytes so far) and has no .sha256 file; it is taken "
            f"once its size and mtime stay unchanged for {self.settle_seconds:g} s (inbox_settle_seconds)"
        )

    def list_plan(
        self,
        hook: ETransportHook,
        config: SkattekontoConnectionConfig,
        *,
        delivery_date: dt.date | None,
        kind: str,
    ) -> Plan:
        files: list[RemoteFile] = yield Call(lambda: self._scan(delivery_date, kind, hook.log))
        return files

    def file_url(self, file: RemoteFile) -> str:
        return f"{self.url.rstrip('/')}/{check_remote_name(file.name)}"

    def open_stream(self, hook: ETransportHook, file: RemoteFile, offset: int) -> Iterator[bytes]:
        root = self._root()
        path = root / check_remote_name(file.name)
        _check_plain_file(root, path)
        if root.protocol in ("file", "local", ""):  # a link swapped in after the listing is refused too
            handle = os.fdopen(os.open(path.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
        else:
            handle = path.open("rb")
        with handle:
            handle.seek(offset)
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk


SIDECAR_MAX_BYTES = 4096
# What this process saw of inbox files: (inbox, name) -> (size, mtime, first seen so), and the SHA-256 of
# (inbox, name, size, mtime), so a sensor polling every minute does not hash an unchanged file again.
_INBOX_SEEN: dict[tuple[str, str], tuple[int, float, float]] = {}
_INBOX_HASHES: dict[tuple[str, str, int, float], str] = {}


def _check_plain_file(root: ObjectStoragePath, entry: ObjectStoragePath) -> None:
    """Raise ValueError unless ``entry`` is a regular file of the inbox: no link, nothing resolving outside."""
    if root.protocol in ("file", "local", ""):
        if os.path.islink(entry.path):
            raise UnsafeRemoteNameError(
                f"it is a symbolic link (to {os.readlink(entry.path)!r}); links are refused, the inbox must "
                "hold the files themselves"
            )
        _check_inside(root, entry)
    if not entry.is_file():
        raise ValueError("it is not a regular file")


def _read_sidecar(root: ObjectStoragePath, sidecar: ObjectStoragePath) -> str | None:
    """The SHA-256 in a ``<name>.sha256`` sidecar (None without one); ValueError if it is unusable."""
    if not sidecar.exists():
        return None
    _check_plain_file(root, sidecar)
    with sidecar.open("rb") as handle:
        raw = handle.read(SIDECAR_MAX_BYTES + 1)
    words = raw.decode("ascii", errors="replace").split()
    if len(raw) > SIDECAR_MAX_BYTES or not words or not re.fullmatch(r"[0-9a-fA-F]{64}", words[0]):
        raise ValueError(
            f"its checksum file {sidecar.name} does not start with 64 hex digits (empty, still being written "
            "or not a SHA-256); the file is taken once its checksum file is complete"
        )
    return words[0].lower()


class _RestartDownload(Exception):
    """The source ignored our Range request: start over from byte 0."""


def _describe(entry: Any) -> str:
    """A listing entry for a log line: its name if it has one, else the entry; escaped and cut short."""
    name = entry.get("name") if isinstance(entry, dict) else None
    return repr(name if isinstance(name, str) else entry)[:120]


def _remote_from_listing(entry: Any, kind: str, pattern: str) -> RemoteFile | None:
    """The :class:`RemoteFile` of an HTTPS listing entry; None if its name does not match ``pattern``.

    Raises ValueError/KeyError/TypeError for an entry that is malformed or hostile. Only a name that
    matches the pattern is a candidate, and its orderer must be a valid organisation number (the name's
    and the entry's, when both are given, must agree): the listing never decides a path on its own.
    """
    if not isinstance(entry, dict):
        raise TypeError(f"a listing entry must be an object, got {type(entry).__name__}")
    name = check_remote_name(entry["name"])
    matched = match_file_name(name, pattern)
    if matched is None:
        return None
    orderer, day = matched
    listed_orderer = entry.get("orderer")
    if listed_orderer is not None:
        check_orderer(listed_orderer)
        if orderer is not None and listed_orderer != orderer:
            raise ValueError(f"the entry names orderer {listed_orderer} but its file name says {orderer}")
        orderer = listed_orderer
    if day is None and entry.get("delivery_morning"):
        day = dt.datetime.fromisoformat(str(entry["delivery_morning"])).date()
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise TypeError(f"size {size!r} is not a whole number")
    delivered = entry.get("delivered_at")
    return RemoteFile(
        name=name,
        size=size,
        sha256=str(entry["sha256"]).lower() if entry.get("sha256") else None,
        delivered_at=dt.datetime.fromisoformat(str(delivered)) if delivered else None,
        delivery_date=day,
        orderer=orderer,
        kind=str(entry.get("kind") or kind),
    )


def _unique(files: list[RemoteFile]) -> list[RemoteFile]:
    """Drop repeated listings of the same file (same name and checksum)."""
    seen: dict[str, RemoteFile] = {}
    for file in files:
        earlier = seen.get(file.name)
        if earlier is not None and earlier.sha256 != file.sha256:
            raise SkattekontoApiError(
                f"The source lists {file.name} twice with different checksums",
                status=None,
                advice="Ask whoever runs the file source which one is right; nothing was downloaded.",
            )
        seen[file.name] = file
    return list(seen.values())


class ETransportHook(SkattekontoHook):
    """Lists and downloads answer files, with the ``skattekonto`` connection's certificate.

    :param file_pattern: regular expression for answer-file names, with optional named groups
        ``orderer`` (10 digits) and ``date`` (YYYYMMDD); default ``SKAHMST_<orgnr>_<YYYYMMDD>_<NNN>.txt``.
    :param download_attempts: attempts per download (broken streams resume with ``Range``).
    :param max_download_mib: the largest file downloaded, in MiB (default: the connection's extra
        ``max_download_mib``, else 512); a larger file, or one that grows past it while streaming when the
        listing gives no size, fails with :class:`DownloadTooLargeError` and leaves nothing in the archive.
    """

    hook_name = "Skatteverket E-transport"

    def __init__(
        self,
        skattekonto_conn_id: str = SkattekontoHook.default_conn_name,
        *,
        file_pattern: str = DEFAULT_FILE_PATTERN,
        download_attempts: int = 4,
        max_download_mib: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(skattekonto_conn_id, **kwargs)
        self.file_pattern = file_pattern
        self.download_attempts = max(1, download_attempts)
        if max_download_mib is not None and max_download_mib <= 0:
            raise ConfigurationError(f"max_download_mib must be > 0, got {max_download_mib!r}")
        self.max_download_mib = max_download_mib

    @property
    def max_download_bytes(self) -> int:
        """The download cap in bytes (the hook argument, else the connection's ``max_download_mib``)."""
        mib = self.max_download_mib if self.max_download_mib is not None else self.config.max_download_mib
        return int(mib * 1024 * 1024)

    def source(self, config: SkattekontoConnectionConfig | None = None) -> DeliverySource:
        """The configured delivery source."""
        config = config or self.config
        if config.etransport_url and config.etransport_inbox:
            raise ConfigurationError(
                f"Connection {config.conn_id!r}: set either etransport_url or etransport_inbox, not both"
            )
        if config.etransport_url:
            return HttpsSource(config.etransport_url, self.file_pattern)
        if config.etransport_inbox:
            return InboxSource(config.etransport_inbox, self.file_pattern, config.inbox_settle_seconds)
        raise ConfigurationError(
            f"Connection {config.conn_id!r}: no E-transport source; set extra 'etransport_url' (HTTPS) or "
            "'etransport_inbox' (the folder your E-transport client fills)"
        )

    def archive_root(self) -> ObjectStoragePath:
        """Where downloaded files are archived: ``archive_url``, else ``$AIRFLOW_HOME/skattekonto/archive``."""
        from airflow.sdk import ObjectStoragePath

        url = self.config.archive_url
        if not url:
            home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
            url = (home / "skattekonto" / "archive").resolve().as_uri()
        return ObjectStoragePath(url)

    def warn_if_archive_is_worker_local(self) -> str | None:
        """Warn (and return the warning) when the archive is on local disk but tasks may run elsewhere.

        With a non-local executor (Celery, Kubernetes, edge) the sensor that archives a file and the
        load that reads it may run on different machines: ``archive_url`` must be shared storage.
        """
        root = self.archive_root()
        executor = configured_executor()
        if getattr(root, "protocol", "file") not in ("file", "local") or executor_is_local(executor):
            return None
        warning = (
            f"archive_url is {str(root)!r}, a path on this worker's local disk, but the executor "
            f"({executor}) may run the load on another machine, where the file is not. Set the "
            f"connection {self.config.conn_id!r}'s extra 'archive_url' to shared object storage "
            "(s3://..., gs://..., or a shared mount) for this executor."
        )
        self.log.warning("%s", warning)
        return warning

    # -- listing ------------------------------------------------------------------------------------
    def _filter(self, files: list[RemoteFile], delivery_date: dt.date | None) -> list[RemoteFile]:
        orderer = self.config.orderer_organisation_number
        return [
            f
            for f in files
            if (delivery_date is None or f.delivery_date in (None, delivery_date))
            and (orderer is None or f.orderer in (None, orderer))
        ]

    def list_files(self, *, delivery_date: dt.date | None = None, kind: str = "skahmst") -> list[RemoteFile]:
        """Answer files on offer, optionally only those of one delivery morning."""
        config = self.config
        files = self.run_plan(self.source(config).list_plan(self, config, delivery_date=delivery_date, kind=kind))
        return self._filter(files, delivery_date)

    async def alist_files(self, *, delivery_date: dt.date | None = None, kind: str = "skahmst") -> list[RemoteFile]:
        """Async :meth:`list_files` (triggers)."""
        config = await self.aconfig()
        files = await self.arun_plan(
            self.source(config).list_plan(self, config, delivery_date=delivery_date, kind=kind)
        )
        return self._filter(files, delivery_date)

    # -- download -----------------------------------------------------------------------------------
    def download(self, file: RemoteFile, target_dir: ObjectStoragePath | str | None = None) -> StoredFile:
        """Stream ``file`` into ``target_dir`` (default: the archive, by orderer and date), atomically.

        Broken streams resume from where they stopped; a size or checksum mismatch starts over; after
        ``download_attempts`` a :class:`DownloadError` is raised and nothing is left in the target.
        """
        from airflow.sdk import ObjectStoragePath

        check_remote_name(file.name)
        if target_dir is None:
            root = self.archive_root()
            orderer = check_orderer(file.orderer) if file.orderer else "unknown"
            folder = root / orderer / (file.delivery_date.isoformat() if file.delivery_date else "undated")
        else:
            root = ObjectStoragePath(target_dir) if isinstance(target_dir, str) else target_dir
            folder = root
        final = folder / file.name
        _check_inside(root, final)
        folder.mkdir(parents=True, exist_ok=True)
        _check_inside(root, final)
        if file.sha256:
            for candidate in (final, _kept_name(final, file.sha256)):
                if candidate.exists() and _archived_sha256(candidate) == file.sha256:
                    self.log.info(
                        "%s is already archived at %s (same SHA-256); not downloading again", file.name, candidate
                    )
                    return StoredFile(
                        file, str(candidate), file.sha256, candidate.stat().st_size, already_archived=True
                    )

        source = self.source()
        self._remove_stale_parts(folder, file.name)
        part = folder / f".{file.name}.{uuid.uuid4().hex}.part"
        retrying = self._retry_policy(self.config, max_attempts=self.download_attempts).start()
        try:
            while True:
                digest, size, problem = self._fetch_into(source, file, part)
                if digest is not None:
                    placed, same = self._place(part, final, digest)
                    if same:
                        self.log.info(
                            "%s is already archived at %s with the same bytes; kept as it is", file.name, placed
                        )
                    else:
                        self.log.info("Archived %s (%d bytes, sha256 %s) at %s", file.name, size, digest, placed)
                    return StoredFile(file, str(placed), digest, size, already_archived=same)
                self.log.warning("Download of %s, attempt %d: %s", file.name, retrying.attempt + 1, problem)
                failed = DownloadError(
                    f"Could not download {file.name} from {source.description} after {retrying.attempt + 1} "
                    f"attempt(s): {problem}. Nothing was archived; the task can be retried."
                )
                delay = retrying.next_delay(failed)
                if delay is None:
                    raise failed
                time.sleep(delay)
        finally:
            if part.exists():
                part.unlink()

    def _place(self, part: ObjectStoragePath, final: ObjectStoragePath, digest: str) -> tuple[ObjectStoragePath, bool]:
        """Move the verified ``part`` to ``final`` without ever overwriting an archived file.

        Returns (where the bytes are archived, whether they were already there). When ``final`` holds other
        bytes (a listing without sha256 that changed), both are kept: the new bytes go under a name suffixed
        with their SHA-256 prefix, and a warning says so.
        """
        kept = _kept_name(final, digest)
        for candidate in (final, kept):
            if _move_if_absent(part, candidate):
                if candidate is kept:
                    self.log.warning(
                        "%s is already archived at %s with other bytes (sha256 %s); nothing was overwritten: both "
                        "are kept, the new file (sha256 %s) as %s. Check with the file source which one is right.",
                        final.name,
                        final,
                        _archived_sha256(final),
                        digest,
                        kept.name,
                    )
                return candidate, False
            if _archived_sha256(candidate) == digest:
                return candidate, True
        raise DownloadError(
            f"Cannot archive {final.name}: both {final} and {kept} already hold other bytes. Nothing was overwritten; "
            "move one of them away and retry."
        )

    def _too_large(self, source: DeliverySource, file: RemoteFile, what: str) -> DownloadTooLargeError:
        cap = self.max_download_bytes
        return DownloadTooLargeError(
            f"Refusing {file.name} from {source.description}: {what}, over the download cap of {cap} bytes "
            f"({cap / 1048576:g} MiB, max_download_mib). Nothing was archived. An answer file is normally far "
            "smaller: check the file source; if the file is genuine, raise the connection's extra max_download_mib "
            "(or the hook's max_download_mib)."
        )

    def _remove_stale_parts(self, folder: ObjectStoragePath, name: str) -> None:
        """Delete partial files of ``name`` left by a killed download (untouched for STALE_PART_SECONDS)."""
        try:
            entries = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing archived there yet (object stores have no folder before its first file)
        for entry in entries:
            if not (entry.name.startswith(f".{name}.") and entry.name.endswith(".part")):
                continue
            try:
                age = time.time() - entry.stat().st_mtime
                if age >= STALE_PART_SECONDS:
                    entry.unlink()
                    self.log.warning("Removed %s, a partial download left %.0f s ago (a killed worker)", entry, age)
            except (OSError, ValueError, TypeError):
                self.log.warning("Could not remove the stale partial download %s", entry, exc_info=True)

    def _fetch_into(
        self, source: DeliverySource, file: RemoteFile, part: ObjectStoragePath
    ) -> tuple[str | None, int, str]:
        """One attempt, resuming broken streams; (sha256, size, '') on success, else (None, size, why)."""
        hasher = hashlib.sha256()
        written = 0
        cap = self.max_download_bytes
        if file.size is not None and file.size > cap:
            raise self._too_large(source, file, f"the listing gives {file.size} bytes")
        with part.open("wb") as out:
            for _ in range(self.download_attempts):
                try:
                    for chunk in source.open_stream(self, file, written):
                        out.write(chunk)
                        hasher.update(chunk)
                        written += len(chunk)
                        if file.size is not None and written > file.size:
                            return None, written, f"more bytes than the {file.size} listed"
                        if written > cap:
                            raise self._too_large(source, file, f"more than {cap} bytes arrived, and still coming")
                    break
                except _RestartDownload:
                    return None, written, "the source ignored the resume request; starting over"
                except httpx.TransportError as exc:
                    tls = tls_failure(exc, getattr(source, "url", ""), self.config.ca_bundle_path)
                    if tls is not None:
                        raise tls from None
                    self.log.warning(
                        "Stream of %s broke after %d bytes (%s); resuming",
                        file.name,
                        written,
                        type(exc).__name__,
                    )
                    continue
            else:
                return None, written, f"the stream kept breaking (last at byte {written})"
        if file.size is not None and written != file.size:
            return None, written, f"got {written} bytes, the listing said {file.size} (truncated)"
        digest = hasher.hexdigest()
        if file.sha256 is not None and digest != file.sha256:
            return None, written, f"SHA-256 {digest} differs from the listed {file.sha256} (corrupt)"
        return digest, written, ""


def _check_inside(root: ObjectStoragePath, path: ObjectStoragePath) -> None:
    """Raise :class:`UnsafeRemoteNameError` unless ``path`` stays under ``root`` (local links resolved)."""
    if root.protocol in ("file", "local", ""):
        base = os.path.realpath(root.path)
        target = os.path.realpath(path.path)
    else:
        base = posixpath.normpath("/" + root.path.lstrip("/"))
        target = posixpath.normpath("/" + path.path.lstrip("/"))
    if os.path.commonpath([base, target]) != base or target == base:
        raise UnsafeRemoteNameError(
            f"Refusing to write {path.name!r}: its archive path resolves outside the archive root {base} "
            f"(to {target}). Nothing was downloaded; check archive_url and any links inside the archive."
        )


def _kept_name(final: ObjectStoragePath, digest: str) -> ObjectStoragePath:
    """Where other bytes for ``final``'s name are kept: the name with the SHA-256 prefix before its suffix."""
    stem, dot, suffix = final.name.rpartition(".")
    if not (dot and stem):
        stem, suffix = final.name, ""
    tail = f".{digest[:16]}" + (f".{suffix}" if suffix else "")
    return final.parent / check_remote_name(stem[: MAX_NAME_LENGTH - len(tail)].rstrip(".") + tail)


def _move_if_absent(part: ObjectStoragePath, target: ObjectStoragePath) -> bool:
    """Move ``part`` to ``target`` unless ``target`` exists (atomically on local disk); True when moved."""
    if part.protocol in ("file", "local", ""):
        try:
            os.link(part.path, target.path)  # fails if the target exists: never an overwrite, even in a race
        except FileExistsError:
            return False
        except OSError:
            pass  # a file system without hard links: check, then rename
        else:
            os.unlink(part.path)
            return True
    if target.exists():
        return False
    part.replace(target)
    return True


def _archived_sha256(path: ObjectStoragePath) -> str:
    with path.open("rb") as handle:
        return sha256_of(handle)[0]


LOCAL_EXECUTORS = ("LocalExecutor", "SequentialExecutor", "DebugExecutor")


def configured_executor() -> str:
    """The ``[core] executor`` setting of this Airflow ("" if it cannot be read)."""
    try:
        from airflow.configuration import conf

        return str(conf.get("core", "executor", fallback="") or "")
    except Exception:  # a worker without the core configuration: say nothing rather than guess
        return ""


def executor_is_local(executor: str) -> bool:
    """Whether every executor in ``executor`` (comma-separated, aliases allowed) runs tasks on this machine."""
    names = [part.split(":")[-1].strip().rsplit(".", 1)[-1] for part in executor.split(",") if part.strip()]
    return all(name in LOCAL_EXECUTORS for name in names)
