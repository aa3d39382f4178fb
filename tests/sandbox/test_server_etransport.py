"""The sandbox's E-transport: file production on the clock, listing, download, Range and file faults."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.domain.remote_files import match_file_name
from airflow_provider_skattekonto.sandbox.server import Sandbox

Http = Callable[..., httpx.Client]
Bestall = Callable[..., httpx.Response]

FILES = "/etransport/v1/files"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(STOCKHOLM)


def listing(client: httpx.Client, **params: str) -> list[dict[str, object]]:
    response = client.get(FILES, params={"kind": "skahmst", **params}, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    files = response.json()["files"]
    assert isinstance(files, list)
    return files


def order_and_get_file(sandbox: Sandbox, client: httpx.Client, ordered: str, seen: str) -> dict[str, object]:
    sandbox.place_order("orderer", at(ordered))
    sandbox.clock.set(now=at(seen), speed=0)
    [entry] = listing(client)
    return entry


def read_partial(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> tuple[httpx.Headers, bytes]:
    """Read a download until the server stops; the bytes received (possibly fewer than Content-Length)."""
    received = bytearray()
    with client.stream("GET", url, headers=headers or {}) as response:
        headers_seen = response.headers
        try:
            for chunk in response.iter_raw():
                received.extend(chunk)
        except httpx.RemoteProtocolError:
            pass
    return headers_seen, bytes(received)


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_api_order_gives_a_file_at_0700_next_business_morning(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_http: Http
) -> None:
    assert sandbox_bestall().status_code == 202
    client = sandbox_http("orderer")
    sandbox.clock.set(now=at("2026-03-11T06:59:59+01:00"))
    assert listing(client) == []
    sandbox.clock.set(now=at("2026-03-11T07:00:00+01:00"))
    [entry] = listing(client)

    orderer = sandbox.pki.identity("orderer").organisation_number
    assert entry["name"] == f"SKAHMST_{orderer}_20260311_001.txt"
    assert match_file_name(str(entry["name"])) == (orderer, dt.date(2026, 3, 11))
    assert entry["kind"] == "skahmst"
    assert entry["orderer"] == orderer
    assert at(str(entry["delivered_at"])) == at("2026-03-11T07:00:00+01:00")
    assert at(str(entry["delivery_morning"])) == at("2026-03-11T07:00:00+01:00")
    assert set(entry) == {"name", "kind", "size", "sha256", "delivered_at", "delivery_morning", "orderer"}

    response = client.get(f"{FILES}/{entry['name']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert int(response.headers["content-length"]) == entry["size"] == len(response.content)
    digest = hashlib.sha256(response.content).hexdigest()
    assert digest == entry["sha256"] == response.headers["x-checksum-sha256"]
    assert response.content.startswith(b"H;")
    assert sandbox.stats()["bytes_served"] == len(response.content)  # counted before the bytes went out


@pytest.mark.sandbox_clock("2026-03-13T10:00:00+01:00", speed=0)
def test_friday_order_lands_monday_and_nothing_comes_on_saturday(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    sandbox.place_order("orderer")  # Friday 10:00
    sandbox.clock.set(now=at("2026-03-14T08:00:00+01:00"))  # Saturday
    assert listing(client) == []
    sandbox.clock.set(now=at("2026-03-16T06:59:00+01:00"))  # Monday before 07:00
    assert listing(client) == []
    sandbox.clock.set(now=at("2026-03-16T07:00:00+01:00"))
    [entry] = listing(client)
    assert str(entry["name"]).endswith("_20260316_001.txt")


@pytest.mark.sandbox_clock("2026-12-23T10:00:00+01:00", speed=0)
def test_no_file_on_holiday_mornings(sandbox: Sandbox, sandbox_http: Http) -> None:
    calendar = ServiceCalendar()
    assert not calendar.is_business_day(dt.date(2026, 12, 24))  # julafton
    assert not calendar.is_business_day(dt.date(2026, 12, 25))
    next_day = calendar.next_business_day(dt.date(2026, 12, 23))
    client = sandbox_http("orderer")
    sandbox.place_order("orderer")
    for day in (24, 25, 26, 27):
        sandbox.clock.set(now=dt.datetime(2026, 12, day, 9, 0, tzinfo=STOCKHOLM))
        if dt.date(2026, 12, day) < next_day:
            assert listing(client) == []
    sandbox.clock.set(now=dt.datetime.combine(next_day, dt.time(7, 0), tzinfo=STOCKHOLM))
    [entry] = listing(client)
    assert str(entry["name"]).endswith(f"_{next_day:%Y%m%d}_001.txt")


@pytest.mark.sandbox_clock("2026-03-11T02:59:00+01:00", speed=0)
def test_only_orders_before_the_cutoff_are_in_the_mornings_file(
    sandbox: Sandbox, sandbox_bestall: Bestall, sandbox_http: Http
) -> None:
    client = sandbox_http("orderer")
    assert sandbox_bestall().status_code == 202  # Wednesday 02:59: Wednesday's file
    sandbox.clock.set(now=at("2026-03-11T05:00:00+01:00"))
    assert sandbox_bestall("orderer2").status_code == 202  # after the cutoff: Thursday's file
    sandbox.clock.set(now=at("2026-03-11T07:00:00+01:00"))
    assert len(listing(client)) == 1
    assert listing(sandbox_http("orderer2")) == []
    sandbox.clock.set(now=at("2026-03-12T07:00:00+01:00"))
    [entry] = listing(sandbox_http("orderer2"))
    assert str(entry["name"]).endswith("_20260312_001.txt")


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_listing_filters_by_morning_and_kind(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    sandbox.place_order("orderer")  # -> Wednesday
    sandbox.place_order("orderer", at("2026-03-11T10:00:00+01:00"))  # -> Thursday
    sandbox.clock.set(now=at("2026-03-12T08:00:00+01:00"))
    assert len(listing(client)) == 2
    [wednesday] = listing(client, morning="2026-03-11")
    assert str(wednesday["name"]).endswith("_20260311_001.txt")
    assert listing(client, morning="2026-03-13") == []
    assert listing(client, kind="other") == []
    assert client.get(FILES, params={"morning": "not-a-date"}).status_code == 400


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_another_organisations_file_is_not_listed_and_404(sandbox: Sandbox, sandbox_http: Http) -> None:
    entry = order_and_get_file(
        sandbox, sandbox_http("orderer"), "2026-03-10T10:00:00+01:00", "2026-03-11T07:30:00+01:00"
    )
    other = sandbox_http("orderer2")
    assert listing(other) == []
    response = other.get(f"{FILES}/{entry['name']}")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found"}


def test_unknown_file_is_404_and_certificate_is_required(sandbox: Sandbox, sandbox_http: Http) -> None:
    response = sandbox_http("orderer").get(f"{FILES}/SKAHMST_5560000167_20260311_009.txt")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found"}
    anonymous = sandbox_http(None)
    assert anonymous.get(FILES).status_code == 401
    assert anonymous.get(f"{FILES}/SKAHMST_5560000167_20260311_009.txt").json() == {"message": "Unauthorized"}
    assert sandbox_http("expired").get(FILES).status_code == 401
    assert sandbox_http("untrusted").get(FILES).status_code == 401


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_file_past_retention_is_gone(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    sandbox.configure(retention_days=2)
    entry = order_and_get_file(sandbox, client, "2026-03-10T10:00:00+01:00", "2026-03-11T07:00:00+01:00")
    sandbox.clock.set(now=at("2026-03-13T06:59:59+01:00"))
    assert len(listing(client)) == 1
    sandbox.clock.set(now=at("2026-03-13T07:00:00+01:00"))
    assert listing(client) == []
    response = client.get(f"{FILES}/{entry['name']}")
    assert response.status_code == 410
    assert response.json() == {"message": "Gone"}


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_range_resumes_a_download(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    entry = order_and_get_file(sandbox, client, "2026-03-10T10:00:00+01:00", "2026-03-11T07:00:00+01:00")
    url = f"{FILES}/{entry['name']}"
    whole = client.get(url).content
    offset = len(whole) // 3
    response = client.get(url, headers={"Range": f"bytes={offset}-"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {offset}-{len(whole) - 1}/{len(whole)}"
    assert response.content == whole[offset:]
    assert response.headers["x-checksum-sha256"] == entry["sha256"]
    unsatisfiable = client.get(url, headers={"Range": f"bytes={len(whole)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(whole)}"
    head = client.head(url)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(whole)
    assert head.content == b""


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_truncated_download_can_be_resumed_to_the_right_checksum(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    entry = order_and_get_file(sandbox, client, "2026-03-10T10:00:00+01:00", "2026-03-11T07:00:00+01:00")
    url = f"{FILES}/{entry['name']}"
    sandbox.faults.add("truncate", send_bytes=1000)
    headers, first = read_partial(client, url)
    assert int(headers["content-length"]) == entry["size"]
    assert len(first) == 1000
    rest = client.get(url, headers={"Range": f"bytes={len(first)}-"})
    assert rest.status_code == 206
    assert hashlib.sha256(first + rest.content).hexdigest() == entry["sha256"]
    assert sandbox.stats()["faults_applied"] == {"truncate": 1}


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_drop_mid_response_on_download(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    entry = order_and_get_file(sandbox, client, "2026-03-10T10:00:00+01:00", "2026-03-11T07:00:00+01:00")
    sandbox.faults.add("drop_mid_response", "etransport_download")
    _, partial = read_partial(client, f"{FILES}/{entry['name']}")
    assert 0 < len(partial) < int(str(entry["size"]))


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_dropped_download_answers_nothing(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    entry = order_and_get_file(sandbox, client, "2026-03-10T10:00:00+01:00", "2026-03-11T07:00:00+01:00")
    sandbox.faults.drop("etransport_download")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{FILES}/{entry['name']}")
    assert client.get(f"{FILES}/{entry['name']}").status_code == 200


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_corrupt_download_has_the_same_length_but_another_checksum(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    entry = order_and_get_file(sandbox, client, "2026-03-10T10:00:00+01:00", "2026-03-11T07:00:00+01:00")
    sandbox.faults.add("corrupt", count=3)
    response = client.get(f"{FILES}/{entry['name']}")
    assert response.status_code == 200
    assert len(response.content) == entry["size"]
    assert response.headers["x-checksum-sha256"] == entry["sha256"]
    assert hashlib.sha256(response.content).hexdigest() != entry["sha256"]
    clean = client.get(f"{FILES}/{entry['name']}").content
    assert sum(a != b for a, b in zip(clean, response.content, strict=True)) == 3


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_late_file_appears_after_its_delay(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    sandbox.place_order("orderer")
    sandbox.faults.add("late", minutes=45, morning="2026-03-11")
    sandbox.clock.set(now=at("2026-03-11T07:00:00+01:00"))
    assert listing(client) == []
    sandbox.clock.set(now=at("2026-03-11T07:44:59+01:00"))
    assert listing(client) == []
    sandbox.clock.set(now=at("2026-03-11T07:45:00+01:00"))
    [entry] = listing(client)
    assert at(str(entry["delivered_at"])) == at("2026-03-11T07:45:00+01:00")


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_missing_file_for_a_morning(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    sandbox.place_order("orderer")
    sandbox.faults.add("missing")
    sandbox.clock.set(now=at("2026-03-11T09:00:00+01:00"))
    assert listing(client) == []
    sandbox.place_order("orderer")  # Wednesday 09:00 -> Thursday
    sandbox.clock.set(now=at("2026-03-12T07:00:00+01:00"))
    [entry] = listing(client)
    assert str(entry["name"]).endswith("_20260312_001.txt")


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_duplicate_listing(sandbox: Sandbox, sandbox_http: Http) -> None:
    client = sandbox_http("orderer")
    sandbox.place_order("orderer")
    sandbox.clock.set(now=at("2026-03-11T07:00:00+01:00"))
    sandbox.faults.add("duplicate_listing")
    first, second = listing(client)
    assert first == second
    assert len(listing(client)) == 1


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_admin_produces_a_file_on_demand(sandbox: Sandbox, sandbox_http: Http) -> None:
    produced = sandbox.produce_file(dt.date(2026, 3, 9), "orderer2")
    assert produced.sha256 is not None
    [entry] = listing(sandbox_http("orderer2"))
    assert entry["name"] == produced.name
    assert entry["sha256"] == produced.sha256
    again = sandbox.produce_file(dt.date(2026, 3, 9), "orderer2")
    assert again.name.endswith("_20260309_002.txt")
    assert again.file_id != produced.file_id
    with pytest.raises(ValueError, match="not a business day"):
        sandbox.produce_file(dt.date(2026, 3, 14))
    response = httpx.post(
        sandbox.base_url + "/_sandbox/files",
        json={"morning": "2026-03-10", "orderer": sandbox.pki.identity("orderer").organisation_number},
        verify=str(sandbox.pki.ca_cert_path),
    )
    assert response.status_code == 201
    assert response.json()["name"].endswith("_20260310_001.txt")
    assert len(listing(sandbox_http("orderer"))) == 1


@pytest.mark.sandbox_clock("2026-03-10T10:00:00+01:00", speed=0)
def test_files_are_generated_with_the_configured_size(sandbox: Sandbox, sandbox_http: Http) -> None:
    small = sandbox.produce_file(dt.date(2026, 3, 9), "orderer")
    sandbox.configure(principals_per_orderer=50, transactions_per_principal=16)
    big = sandbox.produce_file(dt.date(2026, 3, 9), "orderer")
    assert big.size is not None and small.size is not None
    assert big.size > small.size


def test_wrong_balance_fault_offsets_one_balance_of_one_morning(sandbox: Sandbox) -> None:
    """The ``wrong_balance`` fault (admin JSON) states the first principal's balance off; the rest is intact
    and the file stays valid (its trailer does not cover balances). The continuity check catches it
    (tests/loading/test_check_operator.py)."""
    from airflow_provider_skattekonto.domain.answer_file import parse_answer_file
    from airflow_provider_skattekonto.domain.records import Balance

    def balances(path: Path) -> list[Balance]:
        with path.open("rb") as stream:
            return [r for r in parse_answer_file(stream, source_name=path.name) if isinstance(r, Balance)]

    with httpx.Client(base_url=sandbox.base_url, verify=str(sandbox.pki.ca_cert_path)) as client:
        added = client.post("/_sandbox/faults", json={"kind": "wrong_balance", "ore": -4200, "morning": "2026-03-10"})
    assert added.status_code == 201, added.text
    honest = balances(sandbox.produce_file(dt.date(2026, 3, 9)).path)
    wrong = sandbox.produce_file(dt.date(2026, 3, 10))
    assert wrong.admin_json()["balance_offset_ore"] == -4200
    sandbox.faults.reset()  # the same morning again, without the fault, for comparison
    expected = balances(sandbox.produce_file(dt.date(2026, 3, 10)).path)
    got = balances(wrong.path)
    assert [b.principal for b in got] == [b.principal for b in expected] == [b.principal for b in honest]
    assert got[0].balance_skatteverket_ore == expected[0].balance_skatteverket_ore - 4200
    assert got[1:] == expected[1:]
