"""Extra links: the URLs they carry and the pages the plugin serves behind them on Airflow's API server."""

from __future__ import annotations

import pytest

from airflow_provider_skattekonto.get_provider_info import get_provider_info
from airflow_provider_skattekonto.links import ArchivedFileLink, SkattekontoOrderLink, archived_file_url, order_url
from tests.rest_api import api_client

ORDER = {
    "correlation_id": "3f2c1d9e-8a7b-4c6d-9e0f-1a2b3c4d5e6f",
    "server_correlation_id": "srv-42",
    "ordered_at": "2026-11-30T20:00:01+01:00",
    "delivery_morning": "2026-12-01T07:00:00+01:00",
}


def test_links_are_registered_with_the_provider() -> None:
    registered = get_provider_info()["extra-links"]
    for link in (SkattekontoOrderLink, ArchivedFileLink):
        assert f"{link.__module__}.{link.__qualname__}" in registered


def test_archive_links_open_the_object_store_console() -> None:
    assert archived_file_url("s3://bucket/archive/a b.txt") == (
        "https://s3.console.aws.amazon.com/s3/object/bucket?prefix=archive/a%20b.txt"
    )
    assert archived_file_url("gs://bucket/x/f.txt").startswith("https://console.cloud.google.com/storage/")
    assert "/skattekonto/archived-file?path=file%3A%2F%2F%2Fa%2Fb.txt" in archived_file_url("file:///a/b.txt")


@pytest.mark.airflow_db
def test_order_page_through_the_api_server(airflow_db: object) -> None:
    url = order_url(ORDER)
    path = url[url.index("/skattekonto/") :]
    with api_client() as client:
        page = client.get(path)
        assert page.status_code == 200
        assert ORDER["correlation_id"] in page.text and "srv-42" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")

        hostile = client.get("/skattekonto/order", params={"correlation_id": "<script>alert(1)</script>"})
        assert hostile.status_code == 400 and "<script>" not in hostile.text

        escaped = client.get(
            "/skattekonto/archived-file", params={"path": "file:///a/<b>.txt", "sha256": "ab" * 32, "size": 10}
        )
        assert escaped.status_code == 200
        assert "&lt;b&gt;" in escaped.text and "<b>" not in escaped.text
        assert client.get("/skattekonto/elsewhere").status_code == 404
        assert client.post("/skattekonto/order").status_code == 405
