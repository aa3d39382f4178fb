"""Shared helpers of the benchmark scripts: child processes, the sandbox as a process, memory, tables.

Not a public API. Every benchmark is a script that prints its figures; each figure is compared, as a
ratio, with a baseline measured in the same run. Measurements run in fresh child processes (this
script re-executed with ``--child ROLE SPEC``) so CPU time and peak memory are per run, and the sandbox
runs in its own process so its CPU never counts as ours.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
RESULT_MARK = "BENCH_RESULT "
CONN_ID = "skattekonto_bench"


# ----------------------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One reported figure: ours against the same run's baseline; ``ratio`` is ours / baseline."""

    benchmark: str
    name: str
    ours: float | None
    baseline: float | None
    unit: str
    baseline_name: str = ""
    target: str = ""  # e.g. "ratio <= 1.5", "< 30 ms"
    met: bool | None = None
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours is not None and self.baseline:
            self.ratio = self.ours / self.baseline


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated), or '-'."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(f"{magnitude:e}".split("e")[1]))
    return f"{value:,.{decimals}f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str] | None = None) -> None:
    """A plain-text table (left-aligned first column, right-aligned others)."""
    out = out or sys.stdout
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    print(f"\n{title}", file=out)
    print(line(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells[1:]:
        print(line(row), file=out)
    out.flush()


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def print_figures(title: str, figures: Sequence[Figure]) -> None:
    """The results table of one benchmark."""
    rows = [
        (
            f.name,
            f"{fmt(f.ours)} {f.unit}".strip(),
            f"{fmt(f.baseline)} {f.unit}".strip() if f.baseline is not None else "-",
            fmt(f.ratio) if f.ratio is not None else "-",
            f.target or "-",
            met_text(f.met),
        )
        for f in figures
    ]
    print_table(title, ("figure", "ours", "baseline", "ratio", "target", "met"), rows)
    baselines = sorted({f.baseline_name for f in figures if f.baseline_name})
    for name in baselines:
        print(f"  baseline: {name}")
    for f in figures:
        if f.note:
            print(f"  note ({f.name}): {f.note}")
    sys.stdout.flush()


def write_json(path: Path | None, benchmark: str, figures: Sequence[Figure], details: dict[str, Any]) -> None:
    """Machine-readable results (``--json-out``), read by ``run_all.py``."""
    if path is None:
        return
    payload = {
        "benchmark": benchmark,
        "machine": machine(),
        "figures": [asdict(f) for f in figures],
        "details": details,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------------- memory


def _proc_status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    kb = _proc_status_kb("VmRSS")
    if kb is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB.

    ``VmHWM`` of the current address space (reset by exec, so it is this child's own peak); falls back
    to ``ru_maxrss``, which Linux carries across fork/exec (it may then include the parent's peak).
    """
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far, all threads."""
    return time.process_time()


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------- child processes


class ChildError(RuntimeError):
    """A measurement child failed; the message holds the tail of its output."""


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for children that import Airflow: a private AIRFLOW_HOME, no examples, and bytecode
    written and read as an installed provider's processes do (pip compiles at install; the DAG processor
    writes .pyc files): with ``PYTHONDONTWRITEBYTECODE`` every child compiled the provider's modules from
    source, which doubled the import time measured in a fresh checkout."""
    env = dict(os.environ)
    (home / "airflow_home").mkdir(parents=True, exist_ok=True)
    env["AIRFLOW_HOME"] = str(home / "airflow_home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if extra:
        env.update(extra)
    return env


@dataclass
class ChildRun:
    """A finished child: its JSON result, wall time seen by the parent, CPU from RUSAGE_CHILDREN."""

    result: dict[str, Any]
    wall_seconds: float
    cpu_seconds: float


def run_child(
    script: Path,
    role: str,
    spec: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
    log: Path | None = None,
) -> ChildRun:
    """Run ``script --child role spec`` in a fresh interpreter and return its result."""
    command = [sys.executable, str(script), "--child", role, json.dumps(spec)]
    cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout, cwd=str(REPO)
        )
        wall = time.perf_counter() - started
        cpu = children_cpu_seconds() - cpu_before
        err.seek(0)
        stderr = err.read()
    if log is not None:
        with log.open("a") as handle:
            handle.write(f"--- {role} {json.dumps(spec)[:300]}\n{stderr}\n")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return ChildRun(json.loads(line[len(RESULT_MARK) :]), wall, cpu)
    tail = "\n".join((proc.stdout + "\n" + stderr).strip().splitlines()[-25:])
    raise ChildError(f"child {role} exited with {proc.returncode} and no result:\n{tail}")


def child_main(roles: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> bool:
    """In a child (``--child ROLE SPEC``): run the role, print its result line, return True."""
    if len(sys.argv) < 4 or sys.argv[1] != "--child":
        return False
    role, spec = sys.argv[2], json.loads(sys.argv[3])
    result = roles[role](spec)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return True


# ------------------------------------------------------------------------------------ the sandbox


# The sandbox answers with TCP_NODELAY (its handler's ``disable_nagle_algorithm``). ``nodelay=False``
# switches it off to show what Nagle's algorithm and the client's delayed ACK cost (~40 ms per request).
_LAUNCHER = (
    "import sys\n"
    "from airflow_provider_skattekonto.sandbox import cli, handler\n"
    "handler.Handler.disable_nagle_algorithm = sys.argv[1] == 'nodelay'\n"
    "sys.exit(cli.main(sys.argv[2:]))\n"
)


class SandboxProcess:
    """The sandbox CLI (``skattekonto-sandbox serve``) as a child process.

    Admin calls go over HTTPS to ``/_sandbox/...`` (loopback, no client certificate needed).
    ``nodelay=False`` turns TCP_NODELAY off in the sandbox's handler (see ``_LAUNCHER``).
    """

    def __init__(
        self, directory: Path, *, rate_limit: float = 20.0, nodelay: bool = True, extra_args: Sequence[str] = ()
    ) -> None:
        self.directory = directory
        self.rate_limit = rate_limit
        self.nodelay = nodelay
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.connection: dict[str, Any] = {}
        self._client: Any = None
        self._stderr: IO[str] | None = None

    def __enter__(self) -> SandboxProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stderr = (self.directory / "sandbox.log").open("a")
        command = [
            sys.executable,
            "-c",
            _LAUNCHER,
            "nodelay" if self.nodelay else "as-shipped",
            "serve",
            "--dir",
            str(self.directory),
            "--port",
            "0",
            "--rate-limit",
            str(self.rate_limit),
            "--conn-id",
            CONN_ID,
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=str(REPO), bufsize=1
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        if not any("listening on" in line for line in lines):
            self.stop()
            raise RuntimeError("The sandbox did not start:\n" + "".join(lines[-20:]))
        # keep draining stdout so the child never blocks on a full pipe
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        self.connection = json.loads((self.directory / "connection.json").read_text())
        self.base_url = str(self.connection["host"])
        self._client = self._http()

    @staticmethod
    def _drain(stream: IO[str]) -> None:
        for _ in stream:
            pass

    def _http(self) -> Any:
        import httpx

        context = ssl.create_default_context(cafile=self.ca_path)
        return httpx.Client(base_url=self.base_url, verify=context, timeout=60.0, trust_env=False)

    @property
    def ca_path(self) -> str:
        return str(self.connection["extra"]["ca_bundle_path"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, method: str, resource_name: str, payload: Any = None) -> Any:
        response = self._client.request(method, f"/_sandbox/{resource_name}", json=payload)
        if response.status_code >= 400:
            raise RuntimeError(f"sandbox admin {method} {resource_name}: HTTP {response.status_code} {response.text}")
        return response.json()

    def reset(self, now: dt.datetime, speed: float) -> None:
        self.admin("POST", "reset", {"now": now.isoformat(), "speed": speed})

    def configure(self, **settings: Any) -> Any:
        return self.admin("POST", "config", settings)

    def place_order(self, received_at: dt.datetime) -> Any:
        return self.admin("POST", "orders", {"received_at": received_at.isoformat()})

    def add_fault(self, **fault: Any) -> Any:
        return self.admin("POST", "faults", fault)

    def clock(self) -> dict[str, Any]:
        return dict(self.admin("GET", "clock"))

    def stats(self) -> dict[str, Any]:
        return dict(self.admin("GET", "stats"))

    def cpu_seconds(self) -> float:
        """CPU time the sandbox process has used so far (from /proc; 0 when unavailable)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            return 0.0

    def connection_json(self, **extra_overrides: Any) -> str:
        """The Airflow connection (JSON for ``AIRFLOW_CONN_<ID>``) with extras replaced (None removes)."""
        connection = json.loads(json.dumps(self.connection))
        for key, value in extra_overrides.items():
            if value is None:
                connection["extra"].pop(key, None)
            else:
                connection["extra"][key] = value
        return json.dumps(connection)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def requests_by_route(stats: dict[str, Any]) -> dict[str, int]:
    """Requests per route (all statuses) from sandbox stats."""
    return {route: sum(int(n) for n in counts.values()) for route, counts in stats.get("requests", {}).items()}


@contextmanager
def workdir(path: str | None, prefix: str, keep: bool = False) -> Iterator[Path]:
    """A working directory: ``path`` if given (kept), else a temporary one removed afterwards."""
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def stockholm() -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Stockholm")
