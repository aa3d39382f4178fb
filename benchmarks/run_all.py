"""Run every benchmark and print one summary table.

Each benchmark runs as its own script (its output streams through), writes its figures as JSON, and
the summary lists every figure: ours, the same run's baseline, the ratio, the target and whether it
was met. ``--quick`` runs tiny sizes (what the CI smoke test does: proves the scripts work; its figures
mean nothing). Usage: ``python benchmarks/run_all.py [--quick] [--only load_throughput,wait_cost]``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt, machine, met_text, print_table

HERE = Path(__file__).resolve().parent
# In the order they run: the import timings first, on a machine not yet busy with the others.
BENCHMARKS = ("import_time", "hook_overhead", "load_throughput", "wait_cost")
QUICK_ARGS: dict[str, list[str]] = {
    "import_time": ["--runs", "1", "--top", "5"],
    "hook_overhead": ["--calls", "20", "--rounds", "1"],
    "load_throughput": ["--principals", "40", "--small-principals", "10", "--transactions-per-principal", "5"],
    "wait_cost": [
        "--hours",
        "0.25",
        "--real-seconds",
        "2",
        "--cold-samples",
        "1",
        "--concurrent",
        "10",
        "--concurrent-speed",
        "240",
        "--concurrent-sleep-minutes",
        "6",
        "--concurrent-late-minutes",
        "4",
        "--data-waits",
        "2",
        "--data-principals",
        "20",
        "--data-speed",
        "60",
    ],
}
USES_SANDBOX = ("hook_overhead", "wait_cost")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); figures are meaningless")
    parser.add_argument("--only", help=f"comma list of benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--json-out", type=Path, help="write the combined results as JSON here")
    parser.add_argument(
        "--require-postgres", action="store_true", help="load_throughput fails instead of skipping PostgreSQL"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skattekonto-bench-all-") as folder:
        sandbox_dir = Path(folder) / "sandbox"  # shared, so the sandbox PKI is made once
        for name in chosen:
            out = Path(folder) / f"{name}.json"
            command = [sys.executable, str(HERE / f"{name}.py"), "--json-out", str(out)]
            if args.quick:
                command += QUICK_ARGS[name]
            if name in USES_SANDBOX:
                command += ["--sandbox-dir", str(sandbox_dir)]
            if name == "load_throughput" and args.require_postgres:
                command.append("--require-postgres")
            print(f"\n=== {name}: {' '.join(command[2:])}", flush=True)
            started = time.perf_counter()
            proc = subprocess.run(command, check=False)
            durations[name] = time.perf_counter() - started
            if proc.returncode != 0 or not out.exists():
                failures[name] = f"exit status {proc.returncode}"
                continue
            results[name] = json.loads(out.read_text())
    rows = []
    for name in chosen:
        if name in failures:
            rows.append((name, "FAILED: " + failures[name], "-", "-", "-", "-", "-"))
            continue
        for figure in results[name]["figures"]:
            unit = figure["unit"]
            rows.append(
                (
                    name,
                    figure["name"],
                    f"{fmt(figure['ours'])} {unit}".strip(),
                    f"{fmt(figure['baseline'])} {unit}".strip() if figure["baseline"] is not None else "-",
                    fmt(figure["ratio"]) if figure["ratio"] is not None else "-",
                    figure["target"] or "-",
                    met_text(figure["met"]),
                )
            )
    info = machine()
    title = (
        f"SUMMARY ({'quick sizes: figures are meaningless' if args.quick else 'default sizes'}; "
        f"{info['cpus']} CPUs, Python {info['python']}, load average {info['loadavg_at_end'][0]}; "
        f"{time.perf_counter() - started_all:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in durations.items()) + ")"
    )
    print_table(title, ("benchmark", "figure", "ours", "baseline", "ratio", "target", "met"), rows)
    missed = [f"{n}: {f['name']}" for n, r in results.items() for f in r["figures"] if f["met"] is False]
    if missed:
        print("\ntargets missed:\n  " + "\n  ".join(missed))
    if args.json_out:
        payload = {"machine": info, "quick": args.quick, "results": results, "failures": failures}
        args.json_out.write_text(json.dumps(payload, indent=2, default=str))
    if failures:
        print(f"\nFAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
