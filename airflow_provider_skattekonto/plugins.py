"""Airflow plugin: registers this provider's timetables so DAG files and the scheduler can use them."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class SkattekontoPlugin(AirflowPlugin):
    """Registers the delivery-morning timetable."""

    name = "skattekonto"
    timetables: list[type] = []
