"""DAG parse cost: the import time our operators add to a DAG file over ``airflow.sdk``.

Each run is a fresh interpreter that first imports what every DAG file imports (``import airflow.sdk``
and ``from airflow.sdk import DAG``) and then, timed separately, the operators of one variant:

* ours: what ``example_dags/skattekonto_daily.py`` imports (BestallOperator, ETransportFileSensor,
  SkattekontoToSqlOperator, DeliveryMorningTimetable);
* baseline: the HTTP provider's ``HttpOperator`` if ``apache-airflow-providers-http`` is installed,
  else the standard provider's ``PythonOperator`` + ``TimeDeltaSensor`` (said so in the output).

Figures are medians over ``--runs`` interleaved runs; target: ours adds < 30 ms. A ``-X importtime``
run lists the heaviest modules our import pulls in beyond ``airflow.sdk``.
Usage: ``python benchmarks/import_time.py [--runs 15]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, child_env, fmt, median, print_figures, print_table, workdir, write_json

BENCHMARK = "import_time"
TARGET_MS = 30.0
SDK = "import airflow.sdk\nfrom airflow.sdk import DAG\n"
OURS = (
    "from airflow_provider_skattekonto.operators.bestall import BestallOperator\n"
    "from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator\n"
    "from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor\n"
    "from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable\n"
)
HTTP = "from airflow.providers.http.operators.http import HttpOperator\n"
STANDARD = (
    "from airflow.providers.standard.operators.python import PythonOperator\n"
    "from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor\n"
)
# Modules a DAG file should not pay for (the brief: heavy imports stay out of module top level).
HEAVY = (
    "cryptography",
    "httpx",
    "httpcore",
    "ssl",
    "sqlite3",
    "psycopg",
    "psycopg2",
    "sqlalchemy",
    "airflow.providers.common.sql",
    "airflow.models",
    "airflow.triggers.base",
    "holidays",
    "certifi",
)

PROBE = """
import json, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
{sdk}
t1 = time.perf_counter(); c1 = time.process_time()
before = set(sys.modules)
{added}
t2 = time.perf_counter(); c2 = time.process_time()
new = sorted(set(sys.modules) - before)
heavy = sorted(h for h in {heavy!r} if h in new or any(m.startswith(h + '.') for m in new))
print(json.dumps({{"sdk_ms": (t1 - t0) * 1e3, "added_ms": (t2 - t1) * 1e3, "added_cpu_ms": (c2 - c1) * 1e3,
                  "modules": len(new), "heavy": heavy}}))
"""


def probe(code_added: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One fresh interpreter: (its measurements, wall time of the whole process in ms)."""
    source = PROBE.format(sdk=SDK, added=code_added or "pass", heavy=HEAVY)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, env=env, check=False)
    wall = (time.perf_counter() - started) * 1e3
    if out.returncode != 0:
        raise RuntimeError(f"import probe failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def importtime_report(code_added: str, env: dict[str, str]) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) of the modules imported by ``code_added`` after airflow.sdk."""
    source = SDK + "import sys\nsys.stderr.write('@@MARK@@\\n')\nsys.stderr.flush()\n" + code_added
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", source], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"-X importtime run failed:\n{out.stderr[-2000:]}")
    rows: list[tuple[str, int, int]] = []
    after = False
    for line in out.stderr.splitlines():
        if line.startswith("@@MARK@@"):
            after = True
            continue
        if not after or not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            _, rest = line.split(":", 1)
            self_us, cumulative_us, name = (part for part in rest.split("|"))
            rows.append((name.rstrip(), int(self_us), int(cumulative_us)))
        except ValueError:
            continue
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per variant (median; 15)")
    parser.add_argument("--top", type=int, default=12, help="heaviest modules to list (12)")
    parser.add_argument("--json-out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    http_installed = importlib.util.find_spec("airflow.providers.http") is not None
    if http_installed:
        baseline_code, baseline_name = HTTP, "apache-airflow-providers-http HttpOperator"
        comparison_note = "apache-airflow-providers-http is installed: compared with its HttpOperator."
    else:
        baseline_code, baseline_name = STANDARD, "standard provider PythonOperator + TimeDeltaSensor"
        comparison_note = (
            "apache-airflow-providers-http is NOT installed: compared with the standard provider's "
            "PythonOperator + TimeDeltaSensor instead."
        )
    variants = {"sdk only": "", "ours": OURS, "baseline": baseline_code}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    with workdir(None, "skattekonto-bench-import-") as folder:
        env = child_env(folder)
        for code in variants.values():  # warm the file-system cache and .pyc files once
            probe(code, env)
        for _ in range(max(1, args.runs)):
            for name, code in variants.items():
                result, wall = probe(code, env)
                samples[name].append(result)
                walls[name].append(wall)
        ours_modules = importtime_report(OURS, env)
        baseline_modules = importtime_report(baseline_code, env)

    def med(name: str, key: str) -> float:
        return median([s[key] for s in samples[name]])

    ours_ms, base_ms = med("ours", "added_ms"), med("baseline", "added_ms")
    sdk_ms = med("sdk only", "sdk_ms")
    wall_added = median(walls["ours"]) - median(walls["sdk only"])
    base_wall_added = median(walls["baseline"]) - median(walls["sdk only"])
    heavy = samples["ours"][0]["heavy"]
    figures = [
        Figure(
            BENCHMARK,
            "import time our operators add (in-process)",
            ours_ms,
            base_ms,
            "ms",
            baseline_name=baseline_name,
            target=f"< {TARGET_MS:g} ms",
            met=ours_ms < TARGET_MS,
            note=comparison_note,
        ),
        Figure(BENCHMARK, "same, CPU time", med("ours", "added_cpu_ms"), med("baseline", "added_cpu_ms"), "ms"),
        Figure(
            BENCHMARK,
            "same, whole-process wall difference",
            wall_added,
            base_wall_added,
            "ms",
            note="median wall of `python -c` (ours/baseline) minus that of the sdk-only program; noisier",
        ),
        Figure(
            BENCHMARK,
            "modules our import adds",
            med("ours", "modules"),
            med("baseline", "modules"),
            "modules",
            note="heavy modules pulled in: " + (", ".join(heavy) if heavy else "none of " + ", ".join(HEAVY)),
        ),
        Figure(
            BENCHMARK,
            "ours vs `import airflow.sdk` itself",
            ours_ms,
            sdk_ms,
            "ms",
            baseline_name="import airflow.sdk + from airflow.sdk import DAG (what every DAG file pays)",
        ),
    ]
    top = sorted(ours_modules, key=lambda row: row[1], reverse=True)[: args.top]
    print_table(
        f"import_time: heaviest modules our operators pull in beyond airflow.sdk (-X importtime, one run; "
        f"{len(ours_modules)} modules)",
        ("module", "self ms", "cumulative ms"),
        [(name.strip(), f"{s / 1000:.2f}", f"{c / 1000:.2f}") for name, s, c in top],
    )
    by_package: dict[str, int] = {}
    for name, self_us, _ in ours_modules:
        root = name.strip().split(".")[0]
        if name.strip().startswith("airflow.providers."):
            root = ".".join(name.strip().split(".")[:3])
        by_package[root] = by_package.get(root, 0) + self_us
    print_table(
        "import_time: self time by package (ours, beyond airflow.sdk)",
        ("package", "self ms"),
        [(k, f"{v / 1000:.2f}") for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])[: args.top]],
    )
    base_total = sum(s for _, s, _ in baseline_modules) / 1000
    print(f"\n  (baseline's -X importtime self total: {base_total:.1f} ms over {len(baseline_modules)} modules)")
    print_figures(
        f"import_time: median of {args.runs} fresh interpreters per variant; {os.cpu_count()} CPUs; "
        f"`import airflow.sdk` + DAG takes {fmt(sdk_ms)} ms",
        figures,
    )
    write_json(
        args.json_out,
        BENCHMARK,
        figures,
        {
            "samples": samples,
            "walls_ms": walls,
            "top_modules": top,
            "by_package_us": by_package,
            "http_provider_installed": http_installed,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
