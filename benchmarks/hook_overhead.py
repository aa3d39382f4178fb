"""Order throughput and per-call overhead of ``SkattekontoHook.bestall()`` against raw httpx.

Both sides POST ``bestall`` to the sandbox (its own process, rate limit raised with
``configure(rate_limit_per_second=...)``) over one kept-alive mutual-TLS connection with the same
client certificate:

* ours: one ``SkattekontoHook`` per "task" calling ``bestall()`` ``--calls`` times; two variants:
  the production clock (``sandbox_clock`` off: the 03:00-05:00 check reads the local clock, as in
  production) and the sandbox clock (``sandbox_clock`` on: two extra GETs per order, before and after);
* baseline: ``httpx.Client`` with an equivalent SSL context, a token fetched once, the same headers
  and a fresh correlation id per call.

Blocks alternate (raw, ours, ours-sandbox-clock) for ``--rounds`` rounds; per-call times are medians.
The sandbox's stats prove one token fetch per hook (task) however many calls it makes.
Usage: ``python benchmarks/hook_overhead.py [--calls 300] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
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
    print_figures,
    print_table,
    run_child,
    stockholm,
    workdir,
    write_json,
)

BENCHMARK = "hook_overhead"
SCRIPT = Path(__file__).resolve()
PROD_CONN_ID = CONN_ID + "_prod"
BESTALL_PATH = "/beskattning/skattekonto/huvudmans-saldo-och-transaktioner/v1/bestall"


def _tokens_issued(admin: Any) -> int:
    stats = admin.get("/_sandbox/stats").json()
    return sum(int(v) for v in stats["tokens_issued"].values())


def _orders(admin: Any) -> int:
    return int(admin.get("/_sandbox/stats").json()["orders"])


def child_bench(spec: dict[str, Any]) -> dict[str, Any]:
    """All blocks in one process (the sandbox is elsewhere); returns per-call times and token counts."""
    import ssl

    import httpx

    from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

    calls, rounds = int(spec["calls"]), int(spec["rounds"])
    admin = httpx.Client(
        base_url=spec["base_url"], verify=ssl.create_default_context(cafile=spec["ca"]), trust_env=False
    )
    variants = ["raw"] + (["hook_prod_clock"] if spec["prod_variant"] else [])
    if spec["sandbox_clock_variant"] or not spec["prod_variant"]:
        variants.append("hook_sandbox_clock")
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, float] = {v: 0.0 for v in variants}
    cold: dict[str, float] = {}
    tokens: dict[str, list[int]] = {v: [] for v in variants}
    orders: dict[str, int] = {v: 0 for v in variants}

    # raw baseline: the same TLS settings the hook uses (TLS 1.2+, the CA, the client certificate)
    context = ssl.create_default_context(cafile=spec["ca"])
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(spec["cert"], spec["key"])
    raw: httpx.Client | None = None
    raw_token = ""
    headers_base = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "client_id": spec["api_client_id"],
        "client_secret": spec["api_client_secret"],
    }

    def raw_call() -> None:
        headers = dict(headers_base)
        headers["Authorization"] = f"Bearer {raw_token}"
        headers["skv_client_correlation_id"] = str(uuid.uuid4())
        assert raw is not None
        response = raw.post(spec["base_url"] + BESTALL_PATH, headers=headers, json={})
        if response.status_code != 202:
            raise RuntimeError(f"raw bestall answered {response.status_code}: {response.text}")

    hooks: dict[str, Any] = {}
    profiles: dict[str, list[str]] = {}
    for _ in range(rounds):
        for variant in variants:
            tokens_before, orders_before = _tokens_issued(admin), _orders(admin)
            if variant == "raw":
                if raw is None:  # cold: connection, token, first call
                    started = time.perf_counter()
                    raw = httpx.Client(verify=context, timeout=30.0, trust_env=False)
                    form = {
                        "grant_type": "client_credentials",
                        "client_id": spec["oauth_client_id"],
                        "client_secret": spec["oauth_client_secret"],
                        "scope": "skahmst",
                    }
                    raw_token = raw.post(spec["token_url"], data=form).json()["access_token"]
                    raw_call()
                    cold[variant] = time.perf_counter() - started
                call: Callable[[], Any] = raw_call
            else:
                hook = hooks.get(variant)
                if hook is None:  # one hook per "task": created once, first call measured cold
                    conn_id = CONN_ID if variant != "hook_prod_clock" else PROD_CONN_ID
                    started = time.perf_counter()
                    hook = hooks[variant] = SkattekontoHook(conn_id)
                    hook.bestall()
                    cold[variant] = time.perf_counter() - started
                call = hook.bestall
            c0 = cpu_seconds()
            for _ in range(calls):
                started = time.perf_counter()
                call()
                times[variant].append(time.perf_counter() - started)
            cpu[variant] += cpu_seconds() - c0
            tokens[variant].append(_tokens_issued(admin) - tokens_before)
            orders[variant] += _orders(admin) - orders_before
    if spec.get("profile"):  # one extra, unrecorded block of the first hook variant under cProfile
        import cProfile
        import io
        import pstats

        variant = variants[1]
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            hooks[variant].bestall()
        profiler.disable()
        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.sort_stats("cumulative").print_stats("skattekonto|structlog|logging|_ssl|calendar", 22)
        stats.sort_stats("tottime").print_stats(10)
        profiles[variant] = buffer.getvalue().splitlines()
    fetched = {name: hook.tokens.fetched for name, hook in hooks.items()}
    for hook in hooks.values():
        hook.close()
    if raw is not None:
        raw.close()
    admin.close()
    return {
        "times": times,
        "cpu": cpu,
        "cold": cold,
        "tokens_per_block": tokens,
        "orders": orders,
        "hook_tokens_fetched": fetched,
        "profiles": profiles,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=300, help="bestall calls per block (300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of blocks (3)")
    parser.add_argument("--rate-limit", type=float, default=1e6, help="sandbox calls/s per client (raised: 1e6)")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra block of hook calls")
    parser.add_argument("--no-sandbox-clock-variant", action="store_true", help="skip the sandbox_clock variant")
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
    tz = stockholm()
    real_now = dt.datetime.now(tz)
    # The production-clock hook checks the 03:00-05:00 closure on the real clock: skip it then.
    prod_open = not (3 <= real_now.hour < 5)
    notes = [] if prod_open else ["real time is 03:00-05:00 in Stockholm: the production-clock variant is skipped"]
    with workdir(None, "skattekonto-bench-hook-") as folder:
        sandbox_dir = Path(args.sandbox_dir) if args.sandbox_dir else folder / "sandbox"
        with SandboxProcess(sandbox_dir, nodelay=not args.sandbox_as_shipped) as sandbox:
            sandbox.reset(now=real_now if prod_open else real_now.replace(hour=10), speed=1.0)
            sandbox.configure(rate_limit_per_second=args.rate_limit, rate_limit_burst=args.rate_limit)
            extra = sandbox.connection["extra"]
            identity_dir = Path(extra["certificate_p12_path"]).parent
            env = child_env(
                folder,
                {
                    f"AIRFLOW_CONN_{CONN_ID.upper()}": sandbox.connection_json(),
                    f"AIRFLOW_CONN_{PROD_CONN_ID.upper()}": sandbox.connection_json(sandbox_clock=None),
                },
            )
            spec = {
                "calls": args.calls,
                "rounds": args.rounds,
                "base_url": sandbox.base_url,
                "ca": sandbox.ca_path,
                "cert": str(identity_dir / "cert.pem"),
                "key": str(identity_dir / "key.pem"),
                "token_url": extra["token_url"],
                "oauth_client_id": sandbox.connection["login"],
                "oauth_client_secret": sandbox.connection["password"],
                "api_client_id": extra["api_client_id"],
                "api_client_secret": extra["api_client_secret"],
                "prod_variant": prod_open,
                "sandbox_clock_variant": not args.no_sandbox_clock_variant,
                "profile": args.profile,
            }
            sandbox_cpu0 = sandbox.cpu_seconds()
            result = run_child(SCRIPT, "bench", spec, env=env, log=folder / "children.log").result
            sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu0
            stats = sandbox.stats()
    for variant, lines in result["profiles"].items():
        print(f"\nhook_overhead: profile of {args.calls} calls ({variant}; cProfile: cumulative, then own time)")
        print("\n".join(lines))
    times: dict[str, list[float]] = result["times"]
    med = {k: statistics.median(v) for k, v in times.items()}
    p95 = {k: sorted(v)[int(len(v) * 0.95)] for k, v in times.items()}
    total = {k: sum(v) for k, v in times.items()}
    rows = [
        (
            variant,
            len(values),
            f"{med[variant] * 1e3:.2f}",
            f"{p95[variant] * 1e3:.2f}",
            fmt(len(values) / total[variant]),
            f"{result['cpu'][variant] / len(values) * 1e3:.2f}",
            f"{result['cold'].get(variant, 0) * 1e3:.0f}",
            ",".join(str(t) for t in result["tokens_per_block"][variant]),
            result["orders"][variant],
        )
        for variant, values in times.items()
    ]
    print_table(
        f"hook_overhead: bestall over one mutual-TLS keep-alive connection ({args.rounds} rounds x {args.calls} calls)",
        (
            "variant",
            "calls",
            "median ms",
            "p95 ms",
            "calls/s",
            "CPU ms/call",
            "first call ms",
            "tokens/block",
            "orders",
        ),
        rows,
    )
    ours = "hook_prod_clock" if "hook_prod_clock" in med else "hook_sandbox_clock"
    baseline_name = "raw httpx.Client POST bestall, same SSL settings, token fetched once"
    hook_tokens = result["hook_tokens_fetched"]
    blocks_per_hook = {k: v for k, v in result["tokens_per_block"].items() if k != "raw"}
    per_task = max(hook_tokens.values()) if hook_tokens else None
    figures = [
        Figure(
            BENCHMARK,
            f"per-call latency ({ours})",
            med[ours] * 1e3,
            med["raw"] * 1e3,
            "ms",
            baseline_name=baseline_name,
            note=f"overhead {1e3 * (med[ours] - med['raw']):.2f} ms per call",
        ),
        Figure(
            BENCHMARK,
            f"order throughput ({ours})",
            len(times[ours]) / total[ours],
            len(times["raw"]) / total["raw"],
            "calls/s",
        ),
        Figure(
            BENCHMARK,
            f"client CPU per call ({ours})",
            result["cpu"][ours] / len(times[ours]) * 1e3,
            result["cpu"]["raw"] / len(times["raw"]) * 1e3,
            "ms",
        ),
    ]
    if "hook_sandbox_clock" in med and ours != "hook_sandbox_clock":
        figures.append(
            Figure(
                BENCHMARK,
                "per-call latency (hook, sandbox_clock on)",
                med["hook_sandbox_clock"] * 1e3,
                med["raw"] * 1e3,
                "ms",
                note="sandbox only: each order also GETs the sandbox clock before and after (3 requests per order)",
            )
        )
    figures += [
        Figure(
            BENCHMARK,
            "first call of a task (cold)",
            result["cold"].get(ours, 0) * 1e3,
            result["cold"].get("raw", 0) * 1e3,
            "ms",
            note="ours: connection parse, PKCS#12 load + checks, SSL context, handshake, token; raw: handshake + token",
        ),
        Figure(
            BENCHMARK,
            "token fetches per task (hook instance)",
            float(per_task) if per_task is not None else None,
            1.0,
            "",
            target="1, whatever the number of calls",
            met=per_task == 1 and all(sum(v) == 1 for v in blocks_per_hook.values()),
            note=(
                f"sandbox tokens_issued per block of {args.calls} calls: "
                + "; ".join(f"{k}: {v}" for k, v in result["tokens_per_block"].items())
                + f" (each hook made {1 + args.calls * args.rounds} calls)"
            ),
        ),
    ]
    print(f"  sandbox CPU during the run: {sandbox_cpu:.1f} s; tokens issued in all: {stats['tokens_issued']}")
    print_figures(f"hook_overhead: {os.cpu_count()} CPUs; sandbox in its own process", figures)
    for note in notes:
        print(f"  {note}")
    write_json(args.json_out, BENCHMARK, figures, {"result": result, "notes": notes, "sandbox_cpu": sandbox_cpu})
    return 0


if __name__ == "__main__":
    if not child_main({"bench": child_bench}):
        sys.exit(main())
