"""ETransportFileSensor: wait for the 07:00 answer file on E-transport and archive it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_skattekonto._task_errors import checked_event, fail_fast_unless_retryable
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, local_iso, parse_moment
from airflow_provider_skattekonto.domain.remote_files import DEFAULT_FILE_PATTERN, RemoteFile
from airflow_provider_skattekonto.exceptions import SkattekontoApiError
from airflow_provider_skattekonto.links import ArchivedFileLink, archived_file_url
from airflow_provider_skattekonto.version_compat import (
    HAS_START_FROM_TRIGGER,
    AirflowFailException,
    AirflowSkipException,
    default_deferrable,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_skattekonto.hooks.etransport import ETransportHook

WHEN_MISSING = ("auto", "fail", "skip")


class ETransportFileSensor(BaseSensorOperator):
    """Wait for the answer file of a delivery morning, then download it into the archive.

    Returns (XCom) the file's metadata and ``path``, its ObjectStoragePath URL in the archive. The extra
    link *Archived answer file* points at it; OpenLineage sees the E-transport file in, the archive out.

    :param skattekonto_conn_id: the ``skattekonto`` connection (certificate, E-transport source, archive).
    :param delivery_morning: the morning whose file to wait for (templated, ISO 8601). Default: the
        ``delivery_morning`` the upstream :class:`BestallOperator` pushed to XCom.
    :param deadline_time: local time (Europe/Stockholm) on the delivery morning after which a missing
        file fails the task with an actionable message (default ``"10:00"``).
    :param poll_interval: seconds between listings from 07:00 on. A wait that sleeps until 07:00 makes
        its first listing a random 0 to ``min(poll_interval / 4, 30)`` seconds later, so that a triggerer
        holding many waits does not list them all in the same instant.
    :param download: download into the archive (default) or only report the file.
    :param when_missing: what a passed deadline without a file does. ``"auto"`` (default): a historical
        run skips, with the reason in the log, and any other run fails. A run is historical when it is a
        backfill (``DagRunType.BACKFILL_JOB``) or its morning was already a past day when the run started
        (catchup runs after an outage, manual runs of old mornings): nothing was ordered for such a
        morning, and later files are full snapshots, so they cover it. A scheduled run for today fails
        loudly when its file is late. ``"fail"`` or ``"skip"`` force one behaviour for every run.
    :param deferrable: wait in the triggerer instead of poking from a worker (needs a running triggerer).
        Default: Airflow's ``[operators] default_deferrable``.
    :param start_from_trigger: start in the triggerer without a worker at all; needs an explicit (templated)
        ``delivery_morning``. Airflow 3.3+; older Airflow ignores it with a warning (the task starts on a
        worker and defers at once).
    """

    template_fields: Sequence[str] = ("skattekonto_conn_id", "delivery_morning", "deadline_time")
    ui_color = "#c6e3f7"
    start_from_trigger = False
    operator_extra_links = (ArchivedFileLink(),)
    _lineage: tuple[str, str | None] | None = None  # (source URL, archive URL) of the file taken

    def __init__(
        self,
        *,
        skattekonto_conn_id: str = "skattekonto_default",
        delivery_morning: str | dt.datetime | None = None,
        deadline_time: str = "10:00",
        poll_interval: float = 120.0,
        download: bool = True,
        when_missing: str = "auto",
        kind: str = "skahmst",
        file_pattern: str = DEFAULT_FILE_PATTERN,
        deferrable: bool = default_deferrable(),
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        if when_missing not in WHEN_MISSING:
            raise ValueError(f"when_missing must be one of {WHEN_MISSING}, got {when_missing!r}")
        self.skattekonto_conn_id = skattekonto_conn_id
        self.delivery_morning = delivery_morning
        self.deadline_time = deadline_time
        self.poll_interval = poll_interval
        self.download = download
        self.when_missing = when_missing
        self.kind = kind
        self.file_pattern = file_pattern
        self.deferrable = deferrable
        if start_from_trigger and delivery_morning is None:
            raise ValueError("start_from_trigger needs delivery_morning (a template is fine)")
        if start_from_trigger and not HAS_START_FROM_TRIGGER:
            self.log.warning(
                "%s: start_from_trigger needs Airflow 3.3+ (templated trigger arguments); ignoring it here, "
                "so the task starts on a worker and defers at once",
                self.task_id,
            )
            start_from_trigger = False
        self.start_from_trigger = start_from_trigger
        if start_from_trigger:
            from airflow.triggers.base import StartTriggerArgs  # only here: it costs DAG-parse time

            self.start_trigger_args = StartTriggerArgs(
                trigger_cls="airflow_provider_skattekonto.triggers.etransport.ETransportFileTrigger",
                trigger_kwargs=self._trigger_kwargs(str(delivery_morning)),
                next_method="execute_complete",
                next_kwargs=None,
                timeout=None,
            )

    # -----------------------------------------------------------------------------------------------
    def _hook(self) -> ETransportHook:
        from airflow_provider_skattekonto.hooks.etransport import ETransportHook

        return ETransportHook(self.skattekonto_conn_id, file_pattern=self.file_pattern)

    def _trigger_kwargs(self, delivery_morning: str) -> dict[str, Any]:
        return {
            "delivery_morning": delivery_morning,
            "skattekonto_conn_id": self.skattekonto_conn_id,
            "deadline_time": self.deadline_time,
            "poll_interval": self.poll_interval,
            "kind": self.kind,
            "file_pattern": self.file_pattern,
        }

    def _requested_morning(self, context: Context) -> dt.datetime:
        from airflow_provider_skattekonto.operators.bestall import BestallOperator

        value: Any = self.delivery_morning
        if value is None:
            upstream = [t.task_id for t in self.upstream_list if isinstance(t, BestallOperator)]
            if not upstream:
                raise AirflowFailException(
                    "ETransportFileSensor needs delivery_morning, or an upstream BestallOperator whose XCom "
                    "says which morning's file to wait for"
                )
            ti = context["ti"]
            map_index = getattr(ti, "map_index", -1)
            # In a mapped task group, the order of this same map index (e.g. one per representative).
            pushed = ti.xcom_pull(task_ids=upstream[0], map_indexes=map_index) if (map_index or 0) >= 0 else None
            if not isinstance(pushed, dict):
                pushed = ti.xcom_pull(task_ids=upstream[0])
            value = pushed.get("delivery_morning") if isinstance(pushed, dict) else None
            if not value:
                raise AirflowFailException(f"The upstream task {upstream[0]!r} pushed no delivery_morning")
        try:
            return parse_moment(value)
        except ValueError as exc:
            raise AirflowFailException(f"delivery_morning={value!r} is not a tz-aware ISO 8601 time: {exc}") from None

    def _window(self, hook: ETransportHook, context: Context) -> tuple[dt.datetime, dt.datetime]:
        morning, deadline, note = hook.calendar.file_wait_window(
            self._requested_morning(context), dt.time.fromisoformat(self.deadline_time)
        )
        if note:
            self.log.info("%s", note)
        return morning, deadline

    # -- deferrable path ----------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        self._started_at: dt.datetime | None = None  # the service time this try started (poke mode)
        ArchivedFileLink.reserve(context)
        if self.download:
            hook = self._hook()
            try:
                hook.warn_if_archive_is_worker_local()
            finally:
                hook.close()
        if not self.deferrable:
            return super().execute(context)
        with fail_fast_unless_retryable():
            return self._execute_deferrable(context)

    def _execute_deferrable(self, context: Context) -> Any:
        from airflow_provider_skattekonto.hooks.skattekonto import endpoints_for_log

        hook = self._hook()
        try:
            morning, deadline = self._window(hook, context)
            now = hook.service_now()
            historical = self._historical(context, morning, now)
            if now >= morning:  # due already (late start, backfill): look once before deferring
                files = hook.list_files(delivery_date=morning.date(), kind=self.kind)
                if files:
                    return self._finish(hook, files, morning, context)
                if now >= deadline:
                    self._missing(hook, morning, deadline, now, historical)
            self.log.info(
                "Deferring: the file of %s is due by 07:00 that morning; polling every %.0f s until %s (%s). The "
                "wait runs in Airflow's triggerer: if no triggerer is running (an optional component on some "
                "platforms), this task stays deferred; start one, or use deferrable=False.",
                local_iso(morning),
                self.poll_interval,
                local_iso(deadline),
                endpoints_for_log(hook.config),
            )
        finally:
            hook.close()
        from airflow_provider_skattekonto.triggers.etransport import ETransportFileTrigger

        self.defer(
            trigger=ETransportFileTrigger(**self._trigger_kwargs(morning.isoformat())),
            method_name="execute_complete",
            kwargs={"historical": historical},
            timeout=self.timeout if self.timeout else None,
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, historical: str | None = None
    ) -> dict[str, Any]:
        """Resumes after the trigger: download the file, or fail/skip with the reason."""
        with fail_fast_unless_retryable():
            return self._complete(context, event, historical if isinstance(historical, str) else None)

    def _complete(self, context: Context, event: Any, historical: str | None) -> dict[str, Any]:
        from airflow_provider_skattekonto.triggers.etransport import ETransportFileTrigger

        event = checked_event(event, ETransportFileTrigger.EVENTS, waiting_for="the answer file")
        if event["status"] == "error":
            message = f"Waiting for the answer file failed: {event['message']}"
            if event.get("retryable") is True:  # an outage beyond the retry budget: the task's retries apply
                raise SkattekontoApiError(message, status=None, retryable=True)
            raise AirflowFailException(message)
        try:
            morning, deadline = parse_moment(event["delivery_morning"]), parse_moment(event["deadline"])
            files = [RemoteFile.from_json(f) for f in event["files"]] if event["status"] == "found" else []
            now = parse_moment(event["now"]) if event["status"] == "missing" else None
        except (KeyError, TypeError, ValueError) as exc:
            raise AirflowFailException(
                f"The wait for the answer file ended with a malformed {event['status']!r} event ({exc!r}); "
                "clear the task to wait again."
            ) from None
        hook = self._hook()
        try:
            if now is not None:
                if historical is None:  # started in the triggerer (start_from_trigger): a backfill still counts
                    historical = self._historical(context, morning, morning)
                self._missing(hook, morning, deadline, now, historical)
            return self._finish(hook, files, morning, context)
        finally:
            hook.close()

    # -- poke / reschedule path ---------------------------------------------------------------------
    def poke(self, context: Context) -> PokeReturnValue | bool:
        with fail_fast_unless_retryable():
            return self._poke(context)

    def _poke(self, context: Context) -> PokeReturnValue | bool:
        hook = self._hook()
        try:
            morning, deadline = self._window(hook, context)
            now = hook.service_now()
            if getattr(self, "_started_at", None) is None:
                self._started_at = now
            if now < morning:
                self.log.info("The file of %s is not due before 07:00 that morning; not polling yet", morning.date())
                return False
            files = hook.list_files(delivery_date=morning.date(), kind=self.kind)
            if files:
                return PokeReturnValue(is_done=True, xcom_value=self._finish(hook, files, morning, context))
            if now >= deadline:
                started = getattr(self, "_started_at", None) or now
                self._missing(hook, morning, deadline, now, self._historical(context, morning, started))
            return False
        finally:
            hook.close()

    # -----------------------------------------------------------------------------------------------
    def _finish(
        self, hook: ETransportHook, files: list[RemoteFile], morning: dt.datetime, context: Context
    ) -> dict[str, Any]:
        newest = max(files, key=lambda f: (f.delivered_at or dt.datetime.min.replace(tzinfo=dt.timezone.utc), f.name))
        if len(files) > 1:
            self.log.warning(
                "%d files for %s (%s); taking the newest, %s: each file is a full snapshot",
                len(files),
                morning.date(),
                ", ".join(f.name for f in files),
                newest.name,
            )
        result: dict[str, Any] = newest.to_json() | {"delivery_morning": local_iso(morning), "path": None}
        if not self.download:
            self.log.info("Found %s (not downloading: download=False)", newest.name)
            self._lineage = (hook.source().file_url(newest), None)
            return result
        stored = hook.download(newest)
        ArchivedFileLink.push(context, archived_file_url(stored.path, sha256=stored.sha256, size=stored.size))
        self._lineage = (hook.source().file_url(newest), stored.path)
        return stored.to_xcom() | {"delivery_morning": local_iso(morning)}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (when its provider is installed): the file on E-transport in, the archived copy out."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        from airflow_provider_skattekonto.lineage import file_dataset

        if self._lineage is None:
            return OperatorLineage()
        source, archived = self._lineage
        return OperatorLineage(inputs=[file_dataset(source)], outputs=[file_dataset(archived)] if archived else [])

    def _historical(self, context: Context, morning: dt.datetime, started: dt.datetime) -> str | None:
        """Why this run counts as historical for ``when_missing="auto"``, or None.

        A backfill run, or a run whose morning was a past day when the wait started (on the service clock).
        """
        if self.when_missing != "auto":
            return None
        run_type = getattr(context.get("dag_run"), "run_type", None)
        if str(getattr(run_type, "value", run_type)) == "backfill":
            return "this is a backfill run"
        started_local = started.astimezone(STOCKHOLM)
        if started_local.date() > morning.astimezone(STOCKHOLM).date():
            return f"the wait started on {started_local:%Y-%m-%d}, after the morning of {morning:%Y-%m-%d}"
        return None

    def _missing(
        self,
        hook: ETransportHook,
        morning: dt.datetime,
        deadline: dt.datetime,
        now: dt.datetime,
        historical: str | None,
    ) -> None:
        morning, deadline, now = (m.astimezone(STOCKHOLM) for m in (morning, deadline, now))
        source = hook.source().description
        cutoff = morning.replace(hour=3)
        message = (
            f"No answer file for the delivery morning {morning:%Y-%m-%d} 07:00 on {source} by the deadline "
            f"{deadline:%H:%M} (now {now:%Y-%m-%d %H:%M}). Was the order placed before the cutoff "
            f"{cutoff:%Y-%m-%d %H:%M} (see the bestall task's log for its skv_client_correlation_id)? "
            f"Was {morning:%Y-%m-%d} a day Skatteverket produced files (add closed dates to the connection's "
            "closed_dates if not)?"
        )
        if self.when_missing == "skip" or historical:
            why = f"when_missing='auto' and {historical}" if historical else "when_missing='skip'"
            skipped = (
                f"{message} Skipping ({why}): nothing may have been ordered for this morning, or E-transport "
                "no longer keeps its file; later files are full snapshots since each reconciliation, so they "
                "cover this period."
            )
            self.log.warning("%s", skipped)
            raise AirflowSkipException(skipped)
        raise AirflowFailException(message)
