"""Airflow plugin: registers this provider's timetables, and the pages its extra links open."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_skattekonto.links import PAGE_PREFIX, link_pages
from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable


class SkattekontoPlugin(AirflowPlugin):
    """Registers :class:`DeliveryMorningTimetable` and serves the extra links' pages (``/skattekonto/``)."""

    name = "skattekonto"
    timetables = [DeliveryMorningTimetable]
    fastapi_apps = [{"app": link_pages, "url_prefix": PAGE_PREFIX, "name": "Skatteverket Skattekonto links"}]
