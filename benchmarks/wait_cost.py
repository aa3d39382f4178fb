"""The cost of waiting for the answer file, and how many waits one triggerer loop holds.

Part 1, one wait: the file arrives N hours (default 8) of sandbox time after the wait starts; the
sandbox clock runs fast so the wait takes about ``--real-seconds`` (default 20). Real polls against the
sandbox (a separate process, so its CPU is not ours). Three ways to wait, each in a fresh process:

* (a) deferrable: ``ETransportFileSensor.execute()`` until it defers, the ``ETransportFileTrigger`` run
  in an asyncio loop as the triggerer would (CPU of the process during the wait), then
  ``execute_complete()``; a worker slot is held only for the two task starts and those two calls;
* (b) reschedule: each poke is a new task try (a fresh process: interpreter, imports, one poke);
  measured on ``--cold-samples`` real fresh processes, multiplied by the pokes the wait needs;
* (c) poke (the baseline): ``BaseSensorOperator.execute()`` in poke mode for the whole wait, the
  slot held throughout.

Sped-up time is mapped back to real time: poke and trigger steps are scaled by the clock speed
(``poke_interval`` and the trigger's ``max_step_seconds`` = real value / speed), so the counts of
clock reads and polls match an N-hour wait; slot-seconds are given for the real N hours.

Part 2, many waits: ``--concurrent`` (default 1000) ETransportFileTriggers in one asyncio loop
against the sandbox: startup, all asleep, then all waking at 07:00 and polling a late file. A
heartbeat task measures the loop's lag (max lateness) in each phase; RSS gives memory per wait.
Baseline: the same waits written as raw ``httpx.AsyncClient`` loops (same requests, same schedule,
one client each, one shared SSL context), in the same process layout. The triggers sleep in production
steps (``--clock-steps production``, see ``_production_clock_steps``); ``--clock-steps sandbox`` keeps
the 1 s cap the hook applies on the sandbox's clock. The waits start one per loop turn, as Airflow's
triggerer creates triggers (``--start gather``: all in one turn); startup ends when every wait has its
first clock reading (the triggers of one connection share clock requests).

Part 3, time to data (``--parts data``): from the file's appearance on E-transport to the committed rows,
with the default ``poll_interval``. A wait that slept until 07:00 lists at 07:00 + a random jitter, then every
``poll_interval``, so what it waits depends on where the file appears on that schedule: each placement of
``--data-late-seconds`` is a round of ``--data-waits`` ETransportFileTriggers (own jitter each) for a file
delivered that long after 07:00; the clock stays frozen before 07:00 until every wait of the round sleeps, so
the child's start-up (seconds of real time, minutes of sandbox time at speed 20) cannot start them after 07:00.
Then the first round's file is downloaded (``ETransportHook.download``) and loaded into SQLite.
Usage: ``python benchmarks/wait_cost.py [--hours 8] [--concurrent 1000] ...`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import datetime as dt
import itertools
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CONN_ID,
    Figure,
    SandboxProcess,
    child_env,
    child_main,
    cpu_seconds,
    fmt,
    median,
    print_figures,
    print_table,
    requests_by_route,
    rss_mb,
    run_child,
    stockholm,
    workdir,
    write_json,
)

BENCHMARK = "wait_cost"
SCRIPT = Path(__file__).resolve()
LAG_LIMIT_S = 0.2  # Airflow's triggerer warns when its loop was blocked longer than this
TRIGGER_MAX_STEP_REAL = 300.0  # ETransportFileTrigger's default max_step_seconds
# The 'asleep' window starts this long after the last trigger's first clock read (the tail of startup)
# and ends shortly before 07:00 on the sandbox clock, when every trigger wakes up.
SETTLE_SECONDS = 1.0
WAKE_MARGIN_SECONDS = 0.25
FROZEN = "ours-frozen"  # part 2's run of our triggers with gc.freeze() before the first wait
# Time to data: each round's clock is frozen this long (service s) before 07:00 while its waits start.
DATA_LEAD_SECONDS = 60.0


# ----------------------------------------------------------------------------- request counting


class RequestCounter(logging.Handler):
    """Counts the HTTP requests httpx makes in this process (its INFO record per request), by kind."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: dict[str, int] = {}
        self.callbacks: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 2:
            return
        path = str(getattr(args[1], "path", args[1]))
        kind = (
            "clock"
            if path.endswith("/_sandbox/clock")
            else "list"
            if path.endswith("/files")
            else "token"
            if "/oauth2/" in path
            else "other"
        )
        count = self.counts[kind] = self.counts.get(kind, 0) + 1
        for callback in self.callbacks:
            callback(kind, count)

    def install(self) -> RequestCounter:
        logger = logging.getLogger("httpx")
        logger.setLevel(logging.INFO)
        logger.propagate = False  # counted, not printed
        logger.handlers = [self]
        return self


def _quiet_airflow_logs() -> None:
    """Hook and trigger INFO logs go to stderr (a file the parent keeps); keep them but not httpx's."""
    logging.getLogger("httpcore").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------ children: one wait


def _sensor(spec: dict[str, Any], **kwargs: Any) -> Any:
    from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor

    return ETransportFileSensor(
        task_id="wait_for_file",
        skattekonto_conn_id=CONN_ID,
        delivery_morning=spec["morning"],
        poll_interval=spec["poll_interval"],
        download=False,
        **kwargs,
    )


def _start_sandbox_clock(spec: dict[str, Any]) -> None:
    """Set the sandbox clock going at the wait's speed once this child has imported Airflow: it stood still at
    the wait's start meanwhile, because at the speed of a short run (``--quick``: 450) a start-up of 2 s would
    be 15 minutes of service time, and the wait would begin after the file had come."""
    import ssl

    import httpx

    context = ssl.create_default_context(cafile=spec["ca"])
    reply = httpx.post(
        spec["base_url"] + "/_sandbox/clock", json={"speed": spec["speed"]}, verify=context, trust_env=False
    )
    reply.raise_for_status()


def child_deferrable(spec: dict[str, Any]) -> dict[str, Any]:
    """(a): execute() until TaskDeferred, the trigger in an asyncio loop, execute_complete()."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider_skattekonto.triggers.etransport import ETransportFileTrigger

    sensor = _sensor(spec, deferrable=True)
    imports = (time.perf_counter() - t0, cpu_seconds() - c0)
    counter = RequestCounter().install()
    _quiet_airflow_logs()

    _start_sandbox_clock(spec)
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        sensor.execute({})
        raise RuntimeError("the sensor did not defer")
    except TaskDeferred as deferred:
        trigger = deferred.trigger
    execute = (time.perf_counter() - t0, cpu_seconds() - c0)
    execute_requests = dict(counter.counts)

    # what the triggerer does: rebuild the trigger from its serialized form; steps scaled to the clock speed
    classpath, kwargs = trigger.serialize()
    kwargs["max_step_seconds"] = TRIGGER_MAX_STEP_REAL / spec["speed"]
    revived = ETransportFileTrigger(**kwargs)
    counter.counts.clear()

    async def first_event() -> Any:
        events: Any = revived.run()
        try:
            return await events.__anext__()
        finally:
            await events.aclose()

    t0, c0 = time.perf_counter(), cpu_seconds()
    event = asyncio.run(first_event())
    wait = (time.perf_counter() - t0, cpu_seconds() - c0)
    trigger_requests = dict(counter.counts)
    counter.counts.clear()

    t0, c0 = time.perf_counter(), cpu_seconds()
    result = sensor.execute_complete({}, event.payload)
    complete = (time.perf_counter() - t0, cpu_seconds() - c0)
    return {
        "imports": imports,
        "execute": execute,
        "wait": wait,
        "complete": complete,
        "status": event.payload.get("status"),
        "found": result.get("name"),
        "classpath": classpath,
        "requests": {"execute": execute_requests, "trigger": trigger_requests, "complete": dict(counter.counts)},
    }


def child_time_to_data(spec: dict[str, Any]) -> dict[str, Any]:
    """Time to data: rounds of ``waits`` ETransportFileTriggers (default poll_interval), one round per placement
    of the file, each wait drawing its own first-poll jitter; then the download and the load into SQLite of the
    first round's file until the commit.

    Each round freezes the sandbox clock ``lead_seconds`` before its morning's 07:00, starts its waits, and starts
    the clock at ``speed`` only once every wait has read it and sleeps. So every wait starts before 07:00, as a
    sensor deferred overnight does, whatever this process's start-up costs in real time (at speed 20 a second of
    it is 20 s on the sandbox clock: a wait started by the clock running meanwhile began after 07:00 and skipped
    the jitter, its listings fixed by the start-up time). Times of the waits are service (sandbox) seconds,
    taken from this process's monotonic clock and the clock's start; the download and load are real seconds.
    """
    import sqlite3
    import ssl

    import httpx

    from airflow_provider_skattekonto.domain.remote_files import RemoteFile
    from airflow_provider_skattekonto.hooks import etransport as etransport_module
    from airflow_provider_skattekonto.hooks.etransport import ETransportHook
    from airflow_provider_skattekonto.loading.snapshot import load_answer_stream
    from airflow_provider_skattekonto.loading.tables import ensure_tables
    from airflow_provider_skattekonto.triggers import etransport as trigger_module

    _quiet_airflow_logs()
    speed, waits = float(spec["speed"]), int(spec["waits"])
    jitters: dict[int, float] = {}
    first_readings: dict[int, str] = {}
    listings: dict[int, list[float]] = {}  # monotonic start of each listing, per wait
    round_state: dict[str, Any] = {}

    draw = trigger_module.first_poll_jitter

    def recorded_jitter(poll_interval: float) -> float:
        jitters[WAIT_ID.get()] = value = draw(poll_interval)
        return value

    trigger_module.first_poll_jitter = recorded_jitter  # type: ignore[assignment]

    def first_sleep(wait: int, reading: Any) -> None:
        if wait in round_state["waiting"]:
            round_state["waiting"].discard(wait)
            first_readings[wait] = reading.now.isoformat()
            if not round_state["waiting"]:
                round_state["asleep"].set()

    _on_first_sleeps(first_sleep)

    list_files = etransport_module.ETransportHook.alist_files

    async def recorded_list(self: Any, **kwargs: Any) -> Any:
        listings.setdefault(WAIT_ID.get(), []).append(time.monotonic())
        return await list_files(self, **kwargs)

    etransport_module.ETransportHook.alist_files = recorded_list  # type: ignore[method-assign]

    async def one(wait: int, morning: str) -> tuple[float, dict[str, Any]]:
        WAIT_ID.set(wait)
        trigger = trigger_module.ETransportFileTrigger(delivery_morning=morning, skattekonto_conn_id=CONN_ID)
        trigger.max_step_seconds = TRIGGER_MAX_STEP_REAL / speed
        events: Any = trigger.run()
        try:
            event = await events.__anext__()
        finally:
            await events.aclose()
        found = time.monotonic()
        if event.payload.get("status") != "found":
            raise RuntimeError(f"wait {wait} ended {event.payload}")
        return found, dict(event.payload)

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        context = ssl.create_default_context(cafile=spec["ca"])
        rounds: list[dict[str, Any]] = []
        payload: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=spec["base_url"], verify=context, trust_env=False, timeout=60) as admin:

            async def set_clock(body: dict[str, Any]) -> tuple[dt.datetime, float]:
                before = time.monotonic()
                reply = await admin.post("/_sandbox/clock", json=body)
                reply.raise_for_status()
                return dt.datetime.fromisoformat(reply.json()["now"]), (before + time.monotonic()) / 2

            for number, (morning_iso, late) in enumerate(zip(spec["mornings"], spec["late_seconds"], strict=True)):
                morning = dt.datetime.fromisoformat(morning_iso)
                start = morning - dt.timedelta(seconds=float(spec["lead_seconds"]))
                await set_clock({"now": start.isoformat(), "speed": 0.0})
                ids = range(number * waits, (number + 1) * waits)
                round_state.update(waiting=set(ids), asleep=asyncio.Event())
                tasks = [asyncio.create_task(one(wait, morning_iso)) for wait in ids]
                asleep = asyncio.create_task(round_state["asleep"].wait())
                done, _ = await asyncio.wait([asleep, *tasks], timeout=300, return_when=asyncio.FIRST_COMPLETED)
                if asleep not in done:
                    asleep.cancel()
                    for task in done:
                        task.result()  # the error of a wait that ended before sleeping
                    raise RuntimeError("the waits did not all read the clock and sleep before 07:00")
                started_at, started_mono = await set_clock({"speed": speed})

                def service_time(
                    mono: float, at: dt.datetime = started_at, origin: float = started_mono
                ) -> dt.datetime:
                    return at + dt.timedelta(seconds=(mono - origin) * speed)

                results = await asyncio.gather(*tasks)
                payload = payload or results[0][1]
                appeared = morning + dt.timedelta(seconds=float(late))
                draws = []
                for wait, (found, _) in zip(ids, results, strict=True):
                    times = [service_time(t) for t in listings.get(wait, [])]
                    draws.append(
                        {
                            "jitter": jitters.get(wait),
                            "first_reading": first_readings.get(wait),
                            "listings_after_07": [round((t - morning).total_seconds(), 2) for t in times],
                            "intervals": [round((b - a).total_seconds(), 2) for a, b in itertools.pairwise(times)],
                            "delay": (service_time(found) - appeared).total_seconds(),
                        }
                    )
                rounds.append({"morning": morning_iso, "late_seconds": float(late), "draws": draws})
        return rounds, payload

    rounds, payload = asyncio.run(main())
    remote = RemoteFile.from_json(payload["files"][0])
    hook = ETransportHook(CONN_ID)
    folder = Path(spec["folder"])
    t0, c0 = time.perf_counter(), cpu_seconds()
    stored = hook.download(remote, target_dir=str(folder / "archive"))
    t1 = time.perf_counter()
    conn = sqlite3.connect(folder / "warehouse.db")
    ensure_tables(conn, dialect="sqlite")
    t2 = time.perf_counter()
    with open(stored.path.removeprefix("file://"), "rb") as handle:
        result = load_answer_stream(
            conn, handle, dialect="sqlite", file_name=remote.name, sha256=stored.sha256, size=stored.size
        )
    t3, c3 = time.perf_counter(), cpu_seconds()
    conn.close()
    return {
        "poll_interval": trigger_module.ETransportFileTrigger(delivery_morning=spec["mornings"][0]).poll_interval,
        "rounds": rounds,
        "download_seconds": t1 - t0,
        "load_seconds": t3 - t2,
        "download_and_load_seconds": t3 - t0,
        "download_and_load_cpu": c3 - c0,
        "rows": result.transactions_inserted,
        "bytes": stored.size,
    }


def child_poke(spec: dict[str, Any]) -> dict[str, Any]:
    """(c): BaseSensorOperator.execute() in poke mode for the whole wait (poke_interval scaled)."""
    sensor = _sensor(
        spec,
        deferrable=False,
        mode="poke",
        poke_interval=spec["poll_interval"] / spec["speed"],
        timeout=7 * 24 * 3600,
    )
    counter = RequestCounter().install()
    _quiet_airflow_logs()
    _start_sandbox_clock(spec)
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = sensor.execute({})
    return {
        "wait": (time.perf_counter() - t0, cpu_seconds() - c0),
        "found": (result or {}).get("name"),
        "requests": dict(counter.counts),
    }


def child_cold_try(spec: dict[str, Any]) -> dict[str, Any]:
    """One reschedule try in a fresh process: imports, the sensor, one poke (``spec['poke']``) or none."""
    t0 = time.perf_counter()
    sensor = _sensor(spec, deferrable=False, mode="reschedule")
    imports = time.perf_counter() - t0
    done: Any = None
    poke = 0.0
    if spec.get("poke"):
        t0 = time.perf_counter()
        done = sensor.poke({})
        poke = time.perf_counter() - t0
    return {"imports": imports, "poke": poke, "done": bool(done)}


# ----------------------------------------------------------------------------- children: many waits


class Heartbeat:
    """A task that sleeps ``interval`` in a loop and records how late each wake-up is, plus RSS samples."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic time, lateness in s)
        self.rss: list[tuple[float, float]] = []
        self.running = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_rss = 0.0
        while self.running:
            expected = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.samples.append((time.monotonic(), now - expected))
            if now >= next_rss:
                self.rss.append((time.monotonic(), rss_mb()))
                next_rss = now + 0.25

    def lag(self, start: float, end: float) -> dict[str, Any]:
        chosen = [(late, t) for t, late in self.samples if start <= t < end]
        if not chosen:
            return {"max": 0.0, "p99": 0.0, "samples": 0, "max_at": 0.0, "over_50ms_at": []}
        values = sorted(late for late, _ in chosen)
        worst, worst_t = max(chosen)
        return {
            "max": worst,
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
            "samples": len(values),
            "max_at": worst_t - start,  # seconds into the phase
            "over_50ms_at": [(round(t - start, 2), round(late, 3)) for late, t in chosen if late > 0.05][:40],
        }

    def rss_between(self, start: float, end: float) -> float | None:
        values = [mb for t, mb in self.rss if start <= t < end]
        return median(values) if values else None


async def _raw_wait(
    client_factory: Any, base: str, etransport: str, morning: dt.datetime, poll: float, day: str
) -> dict[str, Any]:
    """The baseline wait: the same requests as the trigger, written directly with httpx."""
    errors = 0

    async def clock(client: Any) -> tuple[dt.datetime, float]:
        nonlocal errors
        while True:
            try:
                response = await client.get(base + "/_sandbox/clock", headers={"Accept": "application/json"})
                body = response.json()
                return dt.datetime.fromisoformat(body["now"]), float(body.get("speed", 1.0)) or 1.0
            except Exception:
                errors += 1
                await asyncio.sleep(0.2)

    async with client_factory() as client:
        while True:
            now, speed = await clock(client)
            remaining = (morning - now).total_seconds() / speed
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, TRIGGER_MAX_STEP_REAL))
        while True:
            try:
                response = await client.get(
                    etransport + "/files",
                    params={"kind": "skahmst", "morning": day},
                    headers={"Accept": "application/json"},
                )
                if response.status_code == 200 and response.json()["files"]:
                    return {"status": "found", "errors": errors}
            except Exception:
                errors += 1
            now, speed = await clock(client)
            await asyncio.sleep(max(poll / speed, 0.05))


def child_concurrent(spec: dict[str, Any]) -> dict[str, Any]:
    """N waits in one asyncio loop (ours: ETransportFileTrigger; raw: httpx loops) with a heartbeat.

    The hook module the trigger imports inside ``run()`` is imported (and timed) first: that import blocks
    a triggerer's loop once, on its first such trigger, and is reported separately.
    """
    import ssl

    from airflow_provider_skattekonto.triggers.etransport import ETransportFileTrigger

    t0 = time.perf_counter()
    import airflow_provider_skattekonto.hooks.etransport  # noqa: F401  (what the first trigger imports)

    first_trigger_import = time.perf_counter() - t0
    import httpx

    n = int(spec["n"])
    if spec.get("clock_steps", "production") == "production":
        _production_clock_steps()
    # when 07:00 comes on the sandbox clock, in this process's monotonic time (read before counting starts)
    with httpx.Client(verify=ssl.create_default_context(cafile=spec["ca"]), trust_env=False) as admin:
        read_at = time.monotonic()
        clock = admin.get(spec["base_url"] + "/_sandbox/clock").json()
    morning = dt.datetime.fromisoformat(spec["morning"])
    wake_at = read_at + (morning - dt.datetime.fromisoformat(clock["now"])).total_seconds() / float(clock["speed"])
    counter = RequestCounter().install()
    _quiet_airflow_logs()
    marks: dict[str, float] = {}
    gc_pauses = _GcPauses().install()
    import gc

    tracked_before = len(gc.get_objects())  # what a full collection walks before the first wait
    if spec.get("gc_freeze"):
        # The experiment that tells what the polling lag is made of: everything this process held before the
        # first wait (Airflow, the provider, the benchmark) is left out of later collections, as Airflow's
        # executors and DAG processor do for their own processes (its triggerer does not).
        gc.freeze()

    def all_asleep() -> None:
        if "all_asleep" not in marks:
            marks["all_asleep"] = time.monotonic()
            marks["cpu_all_asleep"] = cpu_seconds()

    # Startup ends when every wait has its first clock reading and sleeps: for the raw loops that is their
    # n-th clock request; the triggers share readings (one request for many waits), so each counts itself.
    waiting: set[int] = set()

    def first_sleep(wait: int, _reading: Any) -> None:
        waiting.add(wait)
        if len(waiting) == n:
            all_asleep()

    _on_first_sleeps(first_sleep)

    def on_request(kind: str, count: int) -> None:
        if kind == "clock" and count == n and spec["kind"] == "raw":
            all_asleep()
        if kind == "list" and "first_poll" not in marks:
            marks["first_poll"] = time.monotonic()
            marks["cpu_first_poll"] = cpu_seconds()

    counter.callbacks.append(on_request)

    async def ours_one(wait: int) -> dict[str, Any]:
        WAIT_ID.set(wait)
        trigger = ETransportFileTrigger(
            delivery_morning=spec["morning"], skattekonto_conn_id=CONN_ID, poll_interval=spec["poll_interval"]
        )
        events: Any = trigger.run()
        try:
            event = await events.__anext__()
            return {"status": event.payload.get("status"), "message": event.payload.get("message")}
        finally:
            await events.aclose()

    context = ssl.create_default_context(cafile=spec["ca"])
    context.load_cert_chain(spec["cert"], spec["key"])

    def raw_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=context, timeout=5.0, trust_env=False)

    async def raw_one(wait: int) -> dict[str, Any]:
        return await _raw_wait(
            raw_client, spec["base_url"], spec["etransport"], morning, spec["poll_interval"], morning.date().isoformat()
        )

    async def main() -> dict[str, Any]:
        heartbeat = Heartbeat()
        beat = asyncio.create_task(heartbeat.run())
        idle_start = time.monotonic()
        await asyncio.sleep(spec["idle_seconds"])
        rss_before = rss_mb()
        marks["start"] = time.monotonic()
        marks["cpu_start"] = cpu_seconds()
        one = ours_one if spec["kind"] == "ours" else raw_one
        loop = asyncio.get_running_loop()

        def at_wake() -> None:
            marks["cpu_wake"] = cpu_seconds()

        loop.call_later(max(0.0, wake_at - time.monotonic()), at_wake)
        tasks = []
        for wait in range(n):
            if spec.get("start", "triggerer") == "triggerer":
                await asyncio.sleep(0)  # as Airflow's TriggerRunner.create_triggers: one new trigger per loop turn
            tasks.append(asyncio.create_task(one(wait)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        marks["end"] = time.monotonic()
        marks["cpu_end"] = cpu_seconds()
        heartbeat.running = False
        await beat
        asleep = marks.get("all_asleep", marks["end"])
        wake = min(wake_at, marks["end"])
        settled = min(asleep + spec["settle_seconds"], wake)
        waking = max(wake - WAKE_MARGIN_SECONDS, settled)
        statuses: dict[str, int] = {}
        failures: list[str] = []
        for result in results:
            if isinstance(result, BaseException):
                key = f"exception {type(result).__name__}"
                failures.append(f"{type(result).__name__}: {str(result)[:200]}")
            else:
                key = str(result.get("status"))
                if result.get("message"):
                    failures.append(str(result["message"])[:200])
            statuses[key] = statuses.get(key, 0) + 1
        sleeping_rss = heartbeat.rss_between(settled, waking) if settled < waking else None
        return {
            "n": n,
            "kind": spec["kind"],
            "statuses": statuses,
            "failures": failures[:5],
            "requests": dict(counter.counts),
            "startup_seconds": asleep - marks["start"] if "all_asleep" in marks else None,
            "asleep_before_first_poll": "all_asleep" in marks and settled < waking,
            "sleep_seconds": max(0.0, wake - asleep),
            "poll_seconds": marks["end"] - wake,
            "first_listing_after_wake_seconds": marks.get("first_poll", marks["end"]) - wake,
            "lag_idle": heartbeat.lag(idle_start, marks["start"]),
            "lag_startup": heartbeat.lag(marks["start"], settled),
            "lag_sleeping": heartbeat.lag(settled, waking),
            "lag_settling": heartbeat.lag(asleep, settled),
            "lag_polling": heartbeat.lag(waking, marks["end"]),
            "rss_before_mb": rss_before,
            "rss_sleeping_mb": sleeping_rss,
            "cpu_startup": marks.get("cpu_all_asleep", marks["cpu_end"]) - marks["cpu_start"],
            "cpu_sleeping": marks.get("cpu_wake", marks["cpu_end"]) - marks.get("cpu_all_asleep", marks["cpu_end"]),
            "cpu_polling": marks["cpu_end"] - marks.get("cpu_wake", marks["cpu_end"]),
            "open_files_limit": _nofile(),
            "first_trigger_import_seconds": first_trigger_import,
            "gc_pauses_over_20ms": [
                (round(t - marks["start"], 2), generation, round(seconds, 3))
                for t, generation, seconds in gc_pauses.pauses
                if seconds > 0.02
            ],
            "gc_max_pause": max((seconds for _, _, seconds in gc_pauses.pauses), default=0.0),
            "gc_tracked_before": tracked_before,
        }

    return asyncio.run(main())


class _GcPauses:
    """Records how long each garbage collection takes (``gc.callbacks``): a long one stalls the loop."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []  # (monotonic start, generation, seconds)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.pauses.append((self._started, int(info.get("generation", -1)), time.monotonic() - self._started))

    def install(self) -> _GcPauses:
        import gc

        gc.callbacks.append(self)
        return self


def _production_clock_steps() -> None:
    """Sleep in the steps a trigger takes on the real clock, though it reads the sandbox's clock.

    On a controllable (sandbox) clock the hook caps every sleep at 1 s real (``ClockReading.longest_sleep``)
    so that clock jumps are noticed: then each of N sleeping triggers reads the clock every second and lists
    every second once polling, whatever ``poll_interval`` says. That is sandbox-only behaviour; a triggerer
    in production sleeps ``max_step_seconds`` (300 s) and polls every ``poll_interval``. With
    ``--clock-steps production`` (default) this child restores the production steps, so part 2 measures
    what a production triggerer does; ``--clock-steps sandbox`` measures the code as the sandbox drives it.
    """
    from airflow_provider_skattekonto.hooks import skattekonto as hook_module

    reading = getattr(hook_module, "ClockReading", None)
    if reading is not None and hasattr(reading, "longest_sleep"):

        def production_step(self: Any, max_step_seconds: float) -> float:
            return max_step_seconds

        reading.longest_sleep = production_step


WAIT_ID: contextvars.ContextVar[int] = contextvars.ContextVar("wait_cost_wait_id", default=-1)


def _on_first_sleeps(callback: Any) -> None:
    """Call ``callback(wait, reading)`` whenever a trigger is about to sleep on a clock reading (``longest_sleep``),
    with the number of its wait (``WAIT_ID``, set in that wait's task): the first call of a wait ends its startup."""
    from airflow_provider_skattekonto.hooks import skattekonto as hook_module

    step = hook_module.ClockReading.longest_sleep

    def counted(self: Any, max_step_seconds: float) -> float:
        callback(WAIT_ID.get(), self)
        return step(self, max_step_seconds)

    hook_module.ClockReading.longest_sleep = counted


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------------------------ parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--hours", type=float, default=8.0, help="sandbox hours from the start of the wait to the file")
    parser.add_argument("--real-seconds", type=float, default=20.0, help="real seconds those hours take (20)")
    parser.add_argument("--poll-interval", type=float, default=120.0, help="sensor poll_interval, service s (120)")
    parser.add_argument("--cold-samples", type=int, default=5, help="fresh processes for a reschedule try (5)")
    parser.add_argument(
        "--concurrent",
        default="1000",
        help="concurrent triggers in one loop; a comma list runs several sizes (raw baseline at the largest); 0 skips",
    )
    parser.add_argument("--concurrent-speed", type=float, default=20.0, help="sandbox clock speed in part 2 (20)")
    parser.add_argument("--concurrent-sleep-minutes", type=float, default=10.0, help="service min asleep (10)")
    parser.add_argument("--concurrent-late-minutes", type=float, default=6.0, help="file late by, service min (6)")
    parser.add_argument(
        "--parts", default="one,many,data", help="which parts to run: one, many, data (time to data); default all"
    )
    parser.add_argument("--data-principals", type=int, default=1000, help="time to data: principals in the file")
    parser.add_argument(
        "--data-waits", type=int, default=25, help="time to data: waits (jitter draws) per placement (25)"
    )
    parser.add_argument(
        "--data-late-seconds",
        default="0,150,180,210",
        help="time to data: placements of the file, service s after 07:00, one morning each (0,150,180,210)",
    )
    parser.add_argument("--data-speed", type=float, default=20.0, help="time to data: sandbox clock speed (20)")
    parser.add_argument(
        "--clock-steps",
        choices=("production", "sandbox"),
        default="production",
        help="part 2: sleep/poll steps as on the real clock (default) or as the sandbox clock caps them (1 s)",
    )
    parser.add_argument(
        "--start",
        choices=("triggerer", "gather"),
        default="triggerer",
        help="part 2: start one wait per loop turn, as Airflow's triggerer creates triggers (default), or all "
        "in the same turn (gather)",
    )
    parser.add_argument("--no-raw-baseline", action="store_true", help="skip part 2's raw-httpx baseline run")
    parser.add_argument(
        "--no-frozen-run",
        action="store_true",
        help="skip part 2's run with the heap held before the first wait frozen (gc.freeze(); informative)",
    )
    parser.add_argument("--sandbox-dir", help="sandbox state folder (reuses its PKI); default: temporary")
    parser.add_argument(
        "--sandbox-nagle",
        dest="sandbox_as_shipped",
        action="store_true",
        help="run the sandbox with Nagle's algorithm (as before TCP_NODELAY: ~40 ms more per request)",
    )
    parser.add_argument("--json-out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    details: dict[str, Any] = {}
    figures: list[Figure] = []
    with workdir(None, "skattekonto-bench-wait-") as folder:
        sandbox_dir = Path(args.sandbox_dir) if args.sandbox_dir else folder / "sandbox"
        log = folder / "children.log"
        try:
            with SandboxProcess(sandbox_dir, rate_limit=1000.0, nodelay=not args.sandbox_as_shipped) as sandbox:
                env = child_env(folder, {f"AIRFLOW_CONN_{CONN_ID.upper()}": sandbox.connection_json()})
                parts = {p.strip() for p in args.parts.split(",")}
                if "one" in parts:
                    figures += _one_wait(args, sandbox, env, log, details)
                if "many" in parts and any(int(n) > 0 for n in str(args.concurrent).split(",")):
                    figures += _many_waits(args, sandbox, env, log, details)
                if "data" in parts:
                    figures += _time_to_data(args, sandbox, env, log, folder, details)
        except Exception:
            if log.exists():
                print(log.read_text()[-4000:], file=sys.stderr)
            raise
    print_figures(f"wait_cost: {os.cpu_count()} CPUs; sandbox in its own process", figures)
    write_json(args.json_out, BENCHMARK, figures, details)
    return 0


def _one_wait(
    args: argparse.Namespace, sandbox: SandboxProcess, env: dict[str, str], log: Path, details: dict[str, Any]
) -> list[Figure]:
    tz = stockholm()
    morning = dt.datetime(2026, 3, 10, 7, 0, tzinfo=tz)  # a Tuesday (business day)
    wait_s = args.hours * 3600
    speed = wait_s / args.real_seconds
    start = morning - dt.timedelta(seconds=wait_s)
    spec = {
        "morning": morning.isoformat(),
        "poll_interval": args.poll_interval,
        "speed": speed,
        "base_url": sandbox.base_url,
        "ca": sandbox.ca_path,
    }
    expected_pokes = math.floor(wait_s / args.poll_interval) + 1

    def setup() -> None:  # the clock stands still until the child has started (_start_sandbox_clock)
        sandbox.reset(now=start, speed=0.0)
        sandbox.place_order(morning - dt.timedelta(hours=6))  # 01:00, before that morning's 03:00 cutoff

    print(
        f"one wait: {args.hours:g} h of sandbox time at speed {speed:g} (about {args.real_seconds:g} s), "
        f"poll_interval {args.poll_interval:g} s",
        flush=True,
    )
    setup()
    stats0, sandbox_cpu0 = sandbox.stats(), sandbox.cpu_seconds()
    deferred = run_child(SCRIPT, "deferrable", spec, env=env, log=log).result
    deferred["sandbox_requests"] = _delta(stats0, sandbox.stats())
    deferred["sandbox_cpu"] = sandbox.cpu_seconds() - sandbox_cpu0
    print(f"  (a) deferrable done: trigger {deferred['wait'][0]:.1f} s real, status {deferred['status']}", flush=True)

    setup()
    sandbox_cpu0 = sandbox.cpu_seconds()
    poked = run_child(SCRIPT, "poke", spec, env=env, log=log).result
    poked["sandbox_cpu"] = sandbox.cpu_seconds() - sandbox_cpu0
    pokes = int(poked["requests"].get("clock", 0))
    print(f"  (c) poke mode done: {poked['wait'][0]:.1f} s real, {pokes} pokes", flush=True)

    # reschedule tries and task starts: fresh processes, the clock frozen before 07:00 (typical pokes)
    sandbox.reset(now=morning - dt.timedelta(hours=4), speed=0.0)
    samples = range(max(1, args.cold_samples))
    tries = [run_child(SCRIPT, "cold_try", {**spec, "poke": True}, env=env, log=log) for _ in samples]
    starts = [run_child(SCRIPT, "cold_try", {**spec, "poke": False}, env=env, log=log) for _ in samples]
    try_wall, try_cpu = median([t.wall_seconds for t in tries]), median([t.cpu_seconds for t in tries])
    start_wall, start_cpu = median([s.wall_seconds for s in starts]), median([s.cpu_seconds for s in starts])
    print(f"  (b) reschedule try in a fresh process: {try_wall:.2f} s wall, {try_cpu:.2f} s CPU", flush=True)

    poke_cpu_each = poked["wait"][1] / max(pokes, 1)
    exec_wall, exec_cpu = deferred["execute"]
    comp_wall, comp_cpu = deferred["complete"]
    slot_a = 2 * start_wall + exec_wall + comp_wall
    cpu_a_worker = 2 * start_cpu + exec_cpu + comp_cpu
    cpu_a_trigger = deferred["wait"][1]
    slot_b = expected_pokes * try_wall
    cpu_b = expected_pokes * try_cpu
    slot_c = start_wall + wait_s
    cpu_c = start_cpu + expected_pokes * poke_cpu_each
    rows = [
        (
            "(a) deferrable",
            2,
            f"{slot_a:.2f}",
            f"{cpu_a_worker:.2f}",
            f"{cpu_a_trigger:.3f}",
            f"{cpu_a_worker + cpu_a_trigger:.2f}",
        ),
        ("(b) reschedule", expected_pokes, f"{slot_b:,.0f}", f"{cpu_b:,.1f}", "0", f"{cpu_b:,.1f}"),
        ("(c) poke", 1, f"{slot_c:,.0f}", f"{cpu_c:.2f}", "0", f"{cpu_c:.2f}"),
    ]
    print_table(
        f"wait_cost: one {args.hours:g} h wait, in real-time terms ({expected_pokes} pokes at "
        f"{args.poll_interval:g} s; task process start {start_wall:.2f} s wall / {start_cpu:.2f} s CPU)",
        ("mode", "task starts", "slot-seconds", "worker CPU s", "triggerer CPU s", "total CPU s"),
        rows,
    )
    trig_req = deferred["requests"]["trigger"]
    print(
        f"  (a) the trigger made {trig_req.get('clock', 0)} clock reads and {trig_req.get('list', 0)} listing(s) "
        f"in the wait; execute() {exec_wall * 1e3:.0f} ms, execute_complete() {comp_wall * 1e3:.0f} ms "
        f"(in-process, after imports)"
    )
    print(
        f"  (c) {pokes} pokes measured at the sped-up clock ({expected_pokes} in real time); "
        f"{poke_cpu_each * 1e3:.1f} ms CPU per poke in a warm process (new hook, TLS handshake, one GET)"
    )
    details["one_wait"] = {
        "speed": speed,
        "expected_pokes": expected_pokes,
        "deferrable": deferred,
        "poke": poked,
        "cold_try": {"wall": [t.wall_seconds for t in tries], "cpu": [t.cpu_seconds for t in tries]},
        "task_start": {"wall": [s.wall_seconds for s in starts], "cpu": [s.cpu_seconds for s in starts]},
    }
    baseline_name = f"(c) poke mode: slot held the whole {args.hours:g} h"
    return [
        Figure(BENCHMARK, "(a) deferrable: worker slot-seconds", slot_a, slot_c, "s", baseline_name=baseline_name),
        Figure(BENCHMARK, "(a) deferrable: CPU s (worker + triggerer)", cpu_a_worker + cpu_a_trigger, cpu_c, "s"),
        Figure(
            BENCHMARK,
            "(a) triggerer CPU during the wait",
            cpu_a_trigger,
            cpu_c,
            "s",
            note=(
                f"{trig_req.get('clock', 0)} clock reads (one per max_step_seconds=300 s), "
                f"{trig_req.get('list', 0)} listing(s); the poke baseline's CPU is the whole wait in a worker"
            ),
        ),
        Figure(BENCHMARK, "(b) reschedule: worker slot-seconds", slot_b, slot_c, "s"),
        Figure(
            BENCHMARK,
            "(b) reschedule: CPU s",
            cpu_b,
            cpu_c,
            "s",
            note="lower bound: excludes the scheduler, executor and task supervisor work of each try",
        ),
    ]


def _scheduled_wait(late: float, jitter: float, poll: float) -> float:
    """Service seconds from a file appearing ``late`` s after 07:00 to the listing that finds it, as documented:
    a wait that slept until 07:00 lists at 07:00 + ``jitter``, then every ``poll`` seconds."""
    return jitter + max(0, math.ceil((late - jitter) / poll)) * poll - late


def _expected_wait(late: float, poll: float, jitter: float, points: int = 3000) -> tuple[float, float, float]:
    """(min, mean, max) of :func:`_scheduled_wait` over first-poll jitters spread evenly over 0..``jitter``."""
    waits = [_scheduled_wait(late, (i + 0.5) * jitter / points, poll) for i in range(points)]
    return min(waits), sum(waits) / len(waits), max(waits)


def _time_to_data(
    args: argparse.Namespace,
    sandbox: SandboxProcess,
    env: dict[str, str],
    log: Path,
    folder: Path,
    details: dict[str, Any],
) -> list[Figure]:
    """From the file's appearance on E-transport to the committed rows, with the default poll_interval.

    How long a wait takes to see the file depends on where the file appears on its schedule (listings at 07:00 +
    j, then every poll_interval; j random in 0..min(poll_interval / 4, 30 s)): a file there by 07:00 waits j, a
    later one until the next listing. One sample says little, so every placement of ``--data-late-seconds`` is a
    round of ``--data-waits`` waits, each with its own jitter. The default placements (07:00, then 150, 180 and
    210 s after it) with the jitter's 0-30 s reach every point of the 120 s poll interval equally often: pooled,
    they are the waits of a file appearing at a random moment.
    """
    from airflow_provider_skattekonto.domain.calendar import ServiceCalendar
    from airflow_provider_skattekonto.triggers.etransport import MAX_FIRST_POLL_JITTER, ETransportFileTrigger

    tz = stockholm()
    late_seconds = [float(value) for value in str(args.data_late_seconds).split(",")]
    mornings = [dt.datetime(2026, 3, 10, 7, 0, tzinfo=tz)]
    while len(mornings) < len(late_seconds):
        mornings.append(ServiceCalendar().next_delivery_morning(mornings[-1]))
    poll = ETransportFileTrigger(delivery_morning=mornings[0].isoformat()).poll_interval
    jitter = min(poll / 4, MAX_FIRST_POLL_JITTER)
    speed = args.data_speed
    sandbox.reset(now=mornings[0] - dt.timedelta(hours=6), speed=0.0)
    sandbox.configure(principals_per_orderer=args.data_principals, transactions_per_principal=50)
    for morning, late in zip(mornings, late_seconds, strict=True):
        # written now, delivered (listed) from 07:00 + late on: the listing that finds it does not write it
        delivered = morning + dt.timedelta(seconds=late)
        sandbox.admin("POST", "files", {"morning": morning.date().isoformat(), "delivered_at": delivered.isoformat()})
    print(
        f"time to data: {args.data_waits} waits for each placement of the file "
        f"({', '.join(f'{s:g}' for s in late_seconds)} s after 07:00), poll_interval {poll:g} s (default), "
        f"sandbox clock at speed {speed:g}; "
        f"{args.data_principals} principals x ~50 transactions",
        flush=True,
    )
    spec = {
        "mornings": [morning.isoformat() for morning in mornings],
        "late_seconds": late_seconds,
        "waits": args.data_waits,
        "speed": speed,
        "lead_seconds": DATA_LEAD_SECONDS,
        "base_url": sandbox.base_url,
        "ca": sandbox.ca_path,
        "folder": str(folder / "time_to_data"),
    }
    Path(spec["folder"]).mkdir(parents=True, exist_ok=True)
    result = run_child(SCRIPT, "time_to_data", spec, env=env, log=log).result
    fetch = result["download_and_load_seconds"]
    on_time: list[float] = []
    pooled: list[float] = []
    first_listing_lag: list[float] = []
    after_schedule: list[float] = []  # each wait's delay minus the documented schedule's, for its own jitter
    intervals: list[float] = []
    for one_round in result["rounds"]:
        late = one_round["late_seconds"]
        delays = [draw["delay"] for draw in one_round["draws"]]
        pooled += delays
        if late <= 0:
            on_time += delays
        for draw in one_round["draws"]:
            first_listing_lag.append(draw["listings_after_07"][0] - draw["jitter"])
            draw["after_schedule"] = draw["delay"] - _scheduled_wait(late, draw["jitter"], poll)
            after_schedule.append(draw["after_schedule"])
            intervals += draw["intervals"]
        low, mean, high = _expected_wait(late, poll, jitter)
        one_round["expected"] = {"min": low, "mean": mean, "max": high}
        print(
            f"  file at 07:00 + {late:g} s: seen {min(delays):.1f}-{max(delays):.1f} s later, mean "
            f"{statistics.fmean(delays):.1f} s ({len(delays)} jitter draws; the schedule gives {low:.0f}-{high:.0f} s, "
            f"mean {mean:.0f} s)",
            flush=True,
        )
    print(
        f"  schedule: first listing 07:00 + jitter + {min(first_listing_lag):.2f}-{max(first_listing_lag):.2f} s, then "
        f"every {min(intervals, default=poll):.2f}-{max(intervals, default=poll):.2f} s; each wait saw the file "
        f"{min(after_schedule):.2f}-{max(after_schedule):.2f} s after the listing its jitter schedules (service "
        f"time: real latencies x {speed:g}); download "
        f"{result['download_seconds']:.2f} s + load {result['load_seconds']:.2f} s real for {result['rows']:,} rows "
        f"({result['bytes'] / 2**20:.1f} MiB)",
        flush=True,
    )
    details["time_to_data"] = result
    common = (
        f"download + load {fetch:.2f} s for {result['rows']:,} rows; add the scheduler's resume of the deferred task"
    )
    figures = []
    if on_time:
        figures.append(
            Figure(
                BENCHMARK,
                "time to data, file there by 07:00: file -> rows committed (mean)",
                statistics.fmean(on_time) + fetch,
                jitter + fetch,
                "s",
                baseline_name=f"worst case: the largest first-poll jitter ({jitter:g} s) + the same download and load",
                note=(
                    f"seen {min(on_time):.1f}-{max(on_time):.1f} s after 07:00 over {len(on_time)} jitter draws "
                    f"(uniform 0-{jitter:g} s: expected {jitter / 2:g} s); {common}"
                ),
            )
        )
    figures.append(
        Figure(
            BENCHMARK,
            "time to data, file appearing at a random moment: file -> rows committed (mean)",
            statistics.fmean(pooled) + fetch,
            poll + fetch,
            "s",
            baseline_name=f"worst case: a whole poll_interval ({poll:g} s) + the same download and load",
            note=(
                f"all {len(pooled)} waits of the placements {', '.join(f'{s:g}' for s in late_seconds)} s after 07:00 "
                f"pooled, seen {min(pooled):.1f}-{max(pooled):.1f} s after the file appeared (the default placements "
                f"reach every point of the poll interval equally: expected {poll / 2:g} s); {common}"
            ),
        )
    )
    return figures


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    a, b = requests_by_route(before), requests_by_route(after)
    return {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) != a.get(k, 0)}


def _many_waits(
    args: argparse.Namespace, sandbox: SandboxProcess, env: dict[str, str], log: Path, details: dict[str, Any]
) -> list[Figure]:
    tz = stockholm()
    morning = dt.datetime(2026, 3, 11, 7, 0, tzinfo=tz)  # a Wednesday
    speed = args.concurrent_speed
    sleep_real = args.concurrent_sleep_minutes * 60 / speed
    late_real = args.concurrent_late_minutes * 60 / speed
    identity_dir = Path(sandbox.connection["extra"]["certificate_p12_path"]).parent
    levels = sorted({int(n) for n in str(args.concurrent).split(",") if int(n) > 0})
    spec = {
        "morning": morning.isoformat(),
        "poll_interval": args.poll_interval,
        "idle_seconds": 2.0,
        "settle_seconds": SETTLE_SECONDS,
        "ca": sandbox.ca_path,
        "cert": str(identity_dir / "cert.pem"),
        "key": str(identity_dir / "key.pem"),
        "base_url": sandbox.base_url,
        "etransport": str(sandbox.connection["extra"]["etransport_url"]),
        "clock_steps": args.clock_steps,
        "start": args.start,
    }
    runs: list[tuple[int, str]] = [(n, "ours") for n in levels]
    if not args.no_raw_baseline:
        runs.append((levels[-1], "raw"))
    if not args.no_frozen_run:
        runs.append((levels[-1], FROZEN))
    results: dict[str, dict[str, Any]] = {}
    for n, kind in runs:
        print(
            f"many waits ({kind}): {n} in one loop; asleep {sleep_real:.0f} s, then polling every "
            f"{args.poll_interval / speed:.1f} s real for a file {late_real:.0f} s late "
            f"({args.clock_steps} clock steps)",
            flush=True,
        )
        # the clock starts while the child imports and idles (about 4 s): start a little earlier
        lead = 5.0 * speed
        sandbox.reset(now=morning - dt.timedelta(minutes=args.concurrent_sleep_minutes, seconds=lead), speed=speed)
        sandbox.place_order(morning - dt.timedelta(hours=6))
        sandbox.add_fault(kind="late", minutes=args.concurrent_late_minutes, morning=morning.date().isoformat())
        sandbox_cpu0 = sandbox.cpu_seconds()
        child_spec = {**spec, "n": n, "kind": "ours" if kind == FROZEN else kind, "gc_freeze": kind == FROZEN}
        result = run_child(SCRIPT, "concurrent", child_spec, env=env, log=log).result
        result["sandbox_cpu"] = sandbox.cpu_seconds() - sandbox_cpu0
        stats = sandbox.stats()
        result["sandbox_stats"] = {k: stats[k] for k in ("connections_total", "requests")}
        results[f"{kind} {n}"] = result
        print(
            f"  {kind} {n}: statuses {result['statuses']}, startup {fmt(result['startup_seconds'])} s, "
            f"max lag asleep {result['lag_sleeping']['max'] * 1e3:.0f} ms, polling "
            f"{result['lag_polling']['max'] * 1e3:.0f} ms",
            flush=True,
        )
        for failure in result["failures"]:
            print(f"    failure: {failure}")
    details["many_waits"] = results

    def per_wait_mb(result: dict[str, Any] | None) -> float | None:
        if not result or result["rss_sleeping_mb"] is None:
            return None
        return float(result["rss_sleeping_mb"] - result["rss_before_mb"]) / int(result["n"])

    def cpu_per_poll(result: dict[str, Any] | None) -> float | None:
        if not result:
            return None
        polls = result["requests"].get("list", 0)
        return float(result["cpu_polling"]) / polls * 1e3 if polls else None

    rows = []
    for key, result in results.items():
        rows.append(
            (
                key,
                ", ".join(f"{k}={v}" for k, v in result["statuses"].items()),
                fmt(result["startup_seconds"]),
                f"{result['lag_idle']['max'] * 1e3:.1f}",
                f"{result['lag_startup']['max'] * 1e3:.0f}",
                f"{result['lag_sleeping']['max'] * 1e3:.1f}",
                f"{result['lag_polling']['max'] * 1e3:.0f} / {result['lag_polling']['p99'] * 1e3:.0f}",
                fmt(per_wait_mb(result)),
                f"{result['requests'].get('list', 0)}",
                fmt(cpu_per_poll(result)),
                f"{result['sandbox_cpu']:.1f}",
            )
        )
    top = levels[-1]
    ours, raw, frozen = results[f"ours {top}"], results.get(f"raw {top}"), results.get(f"{FROZEN} {top}")
    print(
        f"\n  the first ETransportFileTrigger in a triggerer process imports the hook modules inside run(): "
        f"{ours['first_trigger_import_seconds'] * 1e3:.0f} ms that block the loop once (measured before the runs)"
    )
    print_table(
        "wait_cost: concurrent waits in one asyncio loop (heartbeat every 10 ms; lag = its max lateness, ms; "
        f"'asleep': from {SETTLE_SECONDS:g} s after the last trigger fell asleep to just before 07:00; "
        "'polling': from the 07:00 wake-up)",
        (
            "run",
            "outcome",
            "startup s",
            "lag idle",
            "lag startup",
            "lag asleep",
            "lag polling max/p99",
            "MiB/wait",
            "listings",
            "CPU ms/poll",
            "sandbox CPU s",
        ),
        rows,
    )
    raw_name = "the same waits as raw httpx.AsyncClient loops (one client each, shared SSL context)"
    limit = f"< {LAG_LIMIT_S * 1e3:.0f} ms"
    figures = [
        Figure(
            BENCHMARK,
            f"{top} triggers: waits that ended 'found'",
            float(ours["statuses"].get("found", 0)),
            float(raw["statuses"].get("found", 0)) if raw else None,
            "",
            baseline_name=raw_name,
            target=f"all {top}",
            met=ours["statuses"].get("found", 0) == top,
        ),
        Figure(
            BENCHMARK,
            f"{top} triggers: max loop lag while asleep",
            ours["lag_sleeping"]["max"] * 1e3,
            raw["lag_sleeping"]["max"] * 1e3 if raw else None,
            "ms",
            target=limit,
            met=ours["lag_sleeping"]["max"] < LAG_LIMIT_S if ours["asleep_before_first_poll"] else None,
            note=(
                f"idle loop before the triggers started: {ours['lag_idle']['max'] * 1e3:.1f} ms"
                if ours["asleep_before_first_poll"]
                else "startup did not finish before 07:00: no pure sleep phase"
            ),
        ),
        Figure(
            BENCHMARK,
            f"{top} triggers: max loop lag at startup",
            ours["lag_startup"]["max"] * 1e3,
            raw["lag_startup"]["max"] * 1e3 if raw else None,
            "ms",
            target=limit,
            met=ours["lag_startup"]["max"] < LAG_LIMIT_S,
            note=(
                f"startup (every trigger's first clock reading) took {fmt(ours['startup_seconds'])} s; waits started "
                + ("one per loop turn, as the triggerer creates them" if args.start == "triggerer" else "all at once")
            ),
        ),
        Figure(
            BENCHMARK,
            f"{top} triggers: max loop lag while polling",
            ours["lag_polling"]["max"] * 1e3,
            raw["lag_polling"]["max"] * 1e3 if raw else None,
            "ms",
            target=limit,
            met=ours["lag_polling"]["max"] < LAG_LIMIT_S,
            note=(
                f"all wake at 07:00 together and stay in step: every poll round is {top} polls at once; "
                f"{ours['sandbox_stats'].get('connections_total', '?')} TLS connections for "
                f"{ours['requests'].get('list', 0)} listings; rounds every {args.poll_interval:g} s of "
                f"service time = {args.poll_interval / speed:.1f} s real ({speed:g}x the real rate of rounds); "
                f"p99 {ours['lag_polling']['p99'] * 1e3:.0f} ms; the longest garbage collection "
                f"{ours['gc_max_pause'] * 1e3:.0f} ms"
                if args.clock_steps == "production"
                else "sandbox clock steps: every trigger reads the clock (asleep) or lists (polling) every second"
            ),
        ),
        Figure(BENCHMARK, f"{top} triggers: memory per wait", per_wait_mb(ours), per_wait_mb(raw), "MiB"),
        Figure(BENCHMARK, f"{top} triggers: CPU per poll", cpu_per_poll(ours), cpu_per_poll(raw), "ms"),
    ]
    if frozen:
        figures.append(
            Figure(
                BENCHMARK,
                f"{top} triggers, the heap held before the first wait frozen: max loop lag while polling",
                frozen["lag_polling"]["max"] * 1e3,
                ours["lag_polling"]["max"] * 1e3,
                "ms",
                baseline_name=f"the plain {top}-trigger run",
                note=(
                    "informative, what the plain run's polling lag is made of: gc.freeze() on the "
                    f"{frozen['gc_tracked_before']:,} objects held before the first wait (plain run: "
                    f"{ours['gc_tracked_before']:,}), so full collections walk only what the waits made; the "
                    f"longest collection {frozen['gc_max_pause'] * 1e3:.0f} ms (plain run: "
                    f"{ours['gc_max_pause'] * 1e3:.0f} ms); "
                    f"waits ended 'found': {frozen['statuses'].get('found', 0)}"
                ),
            )
        )
    for n in levels[:-1]:
        result = results[f"ours {n}"]
        figures.append(
            Figure(
                BENCHMARK,
                f"{n} triggers: max loop lag while polling",
                result["lag_polling"]["max"] * 1e3,
                ours["lag_polling"]["max"] * 1e3,
                "ms",
                baseline_name=f"the {top}-trigger run",
                target=limit,
                met=result["lag_polling"]["max"] < LAG_LIMIT_S,
            )
        )
    return figures


if __name__ == "__main__":
    if not child_main(
        {
            "deferrable": child_deferrable,
            "poke": child_poke,
            "cold_try": child_cold_try,
            "concurrent": child_concurrent,
            "time_to_data": child_time_to_data,
        }
    ):
        sys.exit(main())
