"""E-transport (an assumed protocol: the real one is not public): ``GET /etransport/v1/files`` lists the
orderer's answer files and ``GET /etransport/v1/files/{name}`` streams one (``Range: bytes=N-``), with the
truncate, corrupt and drop faults applied on the wire."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

from airflow_provider_skattekonto.sandbox.connection import ConnectionHandler, Reply, json_body
from airflow_provider_skattekonto.sandbox.protocol import FILE_KIND

CHUNK = 256 * 1024  # download chunk size


class EtransportEndpoints(ConnectionHandler):
    """The file listing and the download of the client certificate's organisation."""

    def _etransport_peer(self) -> str:
        peer = self._peer_certificate()
        if peer.organisation_number is None:
            raise Reply(401)
        return peer.organisation_number

    def _etransport_list(self, query: str) -> None:
        sandbox = self.sandbox
        orderer = self._etransport_peer()
        params = {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}
        day: dt.date | None = None
        if params.get("morning"):
            try:
                day = dt.date.fromisoformat(params["morning"])
            except ValueError:
                raise Reply(400) from None
        kind = params.get("kind")
        now = sandbox.clock.now()
        files = [] if kind not in (None, "", FILE_KIND) else sandbox.production.visible(orderer, now, day=day)
        entries = [answer.listing_json() for answer in files]
        if entries and sandbox.faults.take(("duplicate_listing",), self._route, self._path) is not None:
            entries.insert(1, dict(entries[0]))
        entries = [entry for entry, _ in sandbox.planted_entries()] + entries
        self._send(200, json_body({"files": entries}))

    def _etransport_download(self, name: str) -> None:
        sandbox = self.sandbox
        orderer = self._etransport_peer()
        now = sandbox.clock.now()
        planted = sandbox.planted_content(name)
        if planted is not None:
            self._send(200, planted, "application/octet-stream")
            return
        answer = sandbox.production.lookup(name, now)
        if answer is None or answer.orderer != orderer or answer.delivered_at > now:
            raise Reply(404)
        if not sandbox.production.retained(answer, now):
            raise Reply(410)
        sandbox.production.ensure_generated(answer)
        assert answer.size is not None and answer.sha256 is not None
        size = answer.size
        start, end = 0, size  # [start, end)
        status = 200
        headers = {
            "x-checksum-sha256": answer.sha256,
            "Accept-Ranges": "bytes",
            "ETag": f'"{answer.sha256}"',
            "Content-Disposition": f'attachment; filename="{answer.name}"',
        }
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                raise Reply(416, headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        length = end - start
        fault = self._after_fault
        self._after_fault = None
        if fault is not None and fault.kind in ("status", "drop"):  # after=True: _send applies it
            self._after_fault = fault
            self._send(200, b"")
            return
        limit = length
        if fault is not None and fault.kind == "drop_mid_response":
            limit = fault.send_bytes if fault.send_bytes is not None else length // 2
        truncate = sandbox.faults.take(("truncate",), self._route, self._path) if self.command == "GET" else None
        if truncate is not None:
            limit = truncate.send_bytes if truncate.send_bytes is not None else length // 2
        limit = min(limit, max(length - 1, 0)) if limit < length else length
        corrupt = sandbox.faults.take(("corrupt",), self._route, self._path) if self.command == "GET" else None
        flips = _corrupt_positions(start, end, corrupt.count) if corrupt is not None else set()
        sandbox._count(self._route, status)
        self._start_response(status, "text/plain; charset=utf-8", length, headers)
        if self.command == "HEAD":
            return
        sent = 0
        with answer.path.open("rb") as handle:
            handle.seek(start)
            while sent < limit:
                chunk = handle.read(min(CHUNK, limit - sent))
                if not chunk:
                    break
                if flips:
                    chunk = _flip(chunk, start + sent, flips)
                sandbox._count_bytes(len(chunk))
                self.wfile.write(chunk)
                sent += len(chunk)
        if sent < length:
            self._drop(counted=False)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single ``bytes=`` range, or None when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                return None
            return max(0, size - suffix), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    end = min(end, size)
    if start < 0 or start >= size or end <= start:
        return None
    return start, end


def _corrupt_positions(start: int, end: int, count: int) -> set[int]:
    """``count`` byte positions in the middle of [start, end) to corrupt."""
    length = end - start
    if length <= 0:
        return set()
    middle = start + length // 2
    step = max(1, length // (4 * max(count, 1)))
    return {min(end - 1, middle + i * step) for i in range(count)}


def _flip(chunk: bytes, offset: int, positions: set[int]) -> bytes:
    """``chunk`` (at file ``offset``) with the bytes at ``positions`` changed, same length.

    A digit becomes another digit and other bytes get their lowest bit flipped, so the text stays
    parseable and only the checksum tells.
    """
    data = bytearray(chunk)
    for position in positions:
        index = position - offset
        if 0 <= index < len(data):
            value = data[index]
            if 0x30 <= value <= 0x39:
                data[index] = 0x30 + (value - 0x30 + 1) % 10
            else:
                data[index] = value ^ 0x01
    return bytes(data)
