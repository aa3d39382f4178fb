"""Airflow plugin: registers this provider's timetables so DAG files and the scheduler can use them."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable


class SkattekontoPlugin(AirflowPlugin):
    """Registers :class:`DeliveryMorningTimetable`."""

    name = "skattekonto"
    timetables = [DeliveryMorningTimetable]
