"""Run the fault drills (``tests/drills``) and print their summary table.

Each drill is a pytest test against real parts (the sandbox over mutual TLS, Airflow's ``dag.test()``,
SQLite files, PostgreSQL at 127.0.0.1:5432). The drills' conftest records one row per drill (what was
broken, what happened, the data check, the secret check); this script runs pytest with
``SKATTEKONTO_DRILL_REPORT`` pointing at a temporary folder, gathers the rows every test process wrote,
and prints one table: drill | fault | outcome | data check | secrets (logs, REST API, temp files) | result.
Drills that try hostile input also record counts; they make a second table (hostile input | drill | tried |
accepted | files written outside the archive | secrets visible through the API | result) and its totals.

Usage: ``python benchmarks/fault_drills.py [-n 2] [--markdown] [--json-out drills.json] [-k EXPR]``.
Exit status: 0 when every drill passed (an ``xfailed`` drill is a known, reported bug), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DRILLS = "tests/drills"
REPORT_ENV = "SKATTEKONTO_DRILL_REPORT"
COLUMNS = ("drill", "fault", "outcome", "data check", "secrets (logs, REST API, temp files)", "result")
HOSTILE_COLUMNS = (
    "hostile input",
    "drill",
    "tried",
    "accepted",
    "files written outside the archive",
    "secrets visible through the API",
    "result",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers ('0': no xdist; default 2)")
    parser.add_argument("-k", dest="keyword", help="only drills matching this pytest -k expression")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json-out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--quiet-pytest", action="store_true", help="do not stream pytest's own output")
    return parser.parse_args(argv)


def run_drills(args: argparse.Namespace, folder: Path) -> tuple[int, float]:
    """Run pytest on the drills; (exit status, seconds)."""
    command = [sys.executable, "-m", "pytest", DRILLS, "-q", "-p", "no:cacheprovider", "-o", "log_cli=false"]
    if args.workers not in ("0", ""):
        command += ["-n", args.workers]
    if args.keyword:
        command += ["-k", args.keyword]
    env = dict(os.environ, **{REPORT_ENV: str(folder)})
    started = time.monotonic()
    output = subprocess.DEVNULL if args.quiet_pytest else None
    status = subprocess.run(command, cwd=REPO, env=env, stdout=output, stderr=output, check=False).returncode
    return status, time.monotonic() - started


def collect(folder: Path) -> list[dict[str, Any]]:
    """Every test's row, in the order of the drills module."""
    entries: list[dict[str, Any]] = []
    for path in sorted(folder.glob("drills-*.json")):
        entries.extend(json.loads(path.read_text()))
    order = _definition_order()
    return sorted(entries, key=lambda e: (order.get(e["nodeid"].split("[")[0].rsplit("::", 1)[-1], 999), e["nodeid"]))


def _definition_order() -> dict[str, int]:
    names = []
    for module in ("test_drills.py", "test_hostile_inputs.py"):
        source = (REPO / DRILLS / module).read_text()
        names += [line.split("(")[0][4:] for line in source.splitlines() if line.startswith("def test_")]
    return {name: index for index, name in enumerate(names)}


def hostile_rows(entries: list[dict[str, Any]]) -> tuple[list[list[str]], dict[str, int]]:
    """The hostile-input table's rows and its totals (what the drills counted, nothing typed by hand)."""
    table: list[list[str]] = []
    totals = {"tried": 0, "accepted": 0, "outside": 0, "api_visible": 0, "drills": 0}
    for entry in entries:
        counts = (entry.get("drill") or {}).get("hostile_input") or {}
        if not counts:
            continue
        passed = entry["result"] == "passed"
        for key in ("tried", "accepted", "outside", "api_visible"):
            totals[key] += int(counts.get(key, 0))
        totals["drills"] += 1
        name = entry["nodeid"].rsplit("::", 1)[-1]
        table.append(
            [
                counts.get("input", ""),
                f"`{name}`",
                str(counts.get("tried", "")),
                str(counts.get("accepted", "")),
                str(counts.get("outside", "")),
                str(counts.get("api_visible", "?")) if passed else "?",
                entry["result"],
            ]
        )
    return table, totals


def hostile_totals_line(totals: dict[str, int]) -> str:
    return (
        f"Totals: **{totals['tried']} hostile inputs tried, {totals['accepted']} accepted, {totals['outside']} files "
        f"written outside the archive, {totals['api_visible']} secrets visible through the API** "
        f"({totals['drills']} drills)."
    )


def rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    """The table's rows; tests without a drill row (the harness self-tests) appear only when they failed."""
    table = []
    for entry in entries:
        drill = entry.get("drill") or {}
        result = entry["result"]
        if not drill and result == "passed":
            continue
        if result == "xfailed":
            result = "xfailed (known bug)"
        table.append(
            [
                drill.get("name") or entry["nodeid"],
                drill.get("fault", ""),
                drill.get("outcome", "") or (entry.get("error", "")[-200:] if result != "passed" else ""),
                drill.get("data", ""),
                drill.get("secrets", ""),
                result,
            ]
        )
    return table


def print_text(table: list[list[str]]) -> None:
    """One block per drill (the cells are long sentences: a wide table would not fit a terminal)."""
    for row in table:
        print(f"\n[{row[5]}] {row[0]}: {row[1]}")
        for name, value in zip(COLUMNS[2:5], row[2:5], strict=True):
            print(f"    {name:16} {value}")


def print_markdown(table: list[list[str]], columns: tuple[str, ...] = COLUMNS) -> None:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in table:
        print("| " + " | ".join(cell(value) for value in row) + " |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skattekonto-drills-") as tmp:
        folder = Path(tmp)
        status, seconds = run_drills(args, folder)
        entries = collect(folder)
    if not entries:
        print(f"No drill rows were written (pytest exit status {status}).", file=sys.stderr)
        return 1
    table = rows(entries)
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["result"]] = counts.get(entry["result"], 0) + 1
    print(
        f"\nFault drills: {len(entries)} tests in {seconds:.0f} s; " + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    if args.markdown:
        print()
        print_markdown(table)
    else:
        print_text(table)
    hostile, totals = hostile_rows(entries)
    if hostile:
        print("\nHostile input\n")
        if args.markdown:
            print_markdown(hostile, HOSTILE_COLUMNS)
        else:
            for row in hostile:
                print(f"[{row[6]}] {row[0]}: tried {row[2]}, accepted {row[3]}, outside {row[4]}, API {row[5]}")
        print()
        print(hostile_totals_line(totals))
    if args.json_out:
        args.json_out.write_text(json.dumps(entries, ensure_ascii=False, indent=1))
    bad = [e for e in entries if e["result"] not in ("passed", "xfailed")]
    return 1 if bad or status not in (0,) else 0


if __name__ == "__main__":
    sys.exit(main())
