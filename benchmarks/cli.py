"""``python -m benchmarks``: run the figures against both servers, write JSON and a chart, print a table.

Speed is reported, never asserted: the exit status is non-zero only when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information

from . import admission, capacity, client_calls, ending, figures, fleet_figure, hostile, load
from .bare_server import run as run_loop
from .chart import write_chart
from .harness import FULL, PROJECT_TARGETS, QUICK, Bench, peer_details
from .peer_runtime import PeerFailed, running_peer
from .procs import Pinning, ServerProcess, bare_command, plan_pinning, project_command, running
from .report import Figure, machine_info, write_json

__all__ = ["FIGURES", "PEER_FIGURES", "main", "run_figure"]

FigureFn = Callable[[Bench], Awaitable[Figure]]

# In running order; memory, workers, admission and hostile start servers of their own, fleet its own fleets.
FIGURES: dict[str, tuple[str, FigureFn]] = {
    "throughput": ("(a) items/s, one stream, fast engine", figures.throughput),
    "first_response": ("(b) time to first response", figures.first_response),
    "paced": ("(c) paced engine, extra gap", figures.paced),
    "concurrent": ("(d) concurrent paced streams", load.concurrent),
    "cancel": ("(e) cancel to engine killed", figures.cancel),
    "memory": ("(f) memory per open stream", load.memory),
    "workers": ("(g) 1 vs 2 workers", load.workers),
    "client_first_response": ("(h) first response through each one's client", client_calls.client_first_response),
    "disconnect": ("(i) client SIGKILL to engine noticing", ending.disconnect),
    "stop": ("(j) what a stop mid-stream delivers", ending.stop),
    "capacity": ("(k) capacity at 20 items/s per stream", capacity.capacity),
    "admission": ("(l) admission queue: burst, cancel to removal", admission.admission),
    "hostile": ("(m) hostile mix beside well-behaved streams", hostile.hostile),
    "fleet": ("(n) fleet: balance, scale-out, a failing replica", fleet_figure.fleet),
}

# The figures the origin's runtime takes part in: it is started only when one of them runs.
PEER_FIGURES = {"throughput", "concurrent", "cancel", "client_first_response", "disconnect", "stop", "capacity"}


def selected_peer_figures(selected: list[str]) -> bool:
    return any(key in PEER_FIGURES for key in selected)


# The project server's tracing: on, every generation's span is made and exported by the SDK's batch processor.
TRACING_ON = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "engine-bench"}
TRACING_OFF = {"OTEL_TRACES_EXPORTER": ""}


DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark engine-server against a bare grpc.aio server in the same run; report ratios.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(FIGURES),
        metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(FIGURES)}",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON and PNG results")
    parser.add_argument(
        "--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="event loop of both servers and client"
    )
    parser.add_argument("--repeats", type=int, help="repeats of the throughput figure (default 1 quick, 3 full)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the client to CPUs")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="trace the project server's generations (OTEL_TRACES_EXPORTER=console into /dev/null: every span made, "
        "batched and formatted); without it, tracing is off as in a server without OTEL_TRACES_EXPORTER",
    )
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="leave out the origin's runtime (benchmarks/.peer-venv) even if installed",
    )
    return parser.parse_args(argv)


def resolve_loop(name: str) -> str:
    """The loop that ``auto`` means here: uvloop where it is installed, as ``engine-server`` decides."""
    if name != "auto":
        return name
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


async def run_figures(
    selected: list[str], bench_args: dict[str, Any], peer: bool, tracing: bool = False
) -> tuple[dict[str, Figure], str]:
    """Start the shared servers (and the peer), run each selected figure (a failure is recorded, not raised), stop
    them; the results, and the peer's version or why it was skipped."""
    results: dict[str, Figure] = {}
    pinning: Pinning = bench_args["pinning"]
    cpus = pinning.server_cpus if pinning.applied else []
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        try:
            servers["bare"] = stack.enter_context(running("bare server", bare_command(bench_args["loop"]), cpus))
            servers["project"] = stack.enter_context(
                running(
                    "project server",
                    project_command(PROJECT_TARGETS, bench_args["loop"]),
                    cpus,
                    TRACING_ON if tracing else TRACING_OFF,
                )
            )
        except Exception as error:
            failed = {key: Figure(key, FIGURES[key][0], "error", f"servers did not start: {error}") for key in selected}
            return failed, "skipped: the servers did not start"
        bench = Bench(servers=servers, **bench_args)
        if not peer:
            bench.peer_reason = "disabled with --no-peer"
        elif not selected_peer_figures(selected):
            bench.peer_reason = "no selected figure measures it"
        else:
            started = await stack.enter_async_context(running_peer(cpus, bench.client_cpus))
            if isinstance(started, str):
                bench.peer_reason = started
            else:
                bench.peer = started
        progress = tqdm(selected, desc="benchmarks", unit="figure", disable=None, file=sys.stderr)
        for key in progress:
            progress.set_postfix_str(FIGURES[key][0])
            results[key] = await run_figure(key, bench)
        progress.close()
    return results, peer_details(bench)["peer"]


async def run_figure(key: str, bench: Bench) -> Figure:
    """One figure; a failure is recorded. Should the peer fail, it is left out from then on and the figure runs
    again without it: the origin's runtime is never what fails a run."""
    title, fn = FIGURES[key]
    try:
        return await fn(bench)
    except PeerFailed as error:
        bench.peer, bench.peer_reason = None, f"it failed during {key}: {error}"[:300]
        return await run_figure(key, bench)
    except Exception as error:
        return Figure(key, title, "error", f"{type(error).__name__}: {error}")


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def summary(results: dict[str, Figure]) -> str:
    """The results as a plain-text table: value, baseline, ratio, the origin's runtime, ratio to it, target, met."""
    rows: list[tuple[str, ...]] = [
        ("figure", "metric", "unit", "project", "baseline", "ratio", "origin", "/origin", "target", "met")
    ]
    for key, figure in results.items():
        if figure.status != "ok":
            rows.append((key, f"{figure.status}: {figure.reason}", *[""] * 8))
            continue
        for m in figure.metrics:
            met = "-" if m.met is None else ("yes" if m.met else "NO")
            values = (_fmt(m.value), _fmt(m.baseline), _fmt(m.ratio), _fmt(m.peer), _fmt(m.peer_ratio))
            rows.append((key, m.name, m.unit, *values, m.targets_text, met))
    # A skipped figure's reason runs on past the columns rather than widening them.
    widths = [max(len(r[i]) for r in rows if r[2] or r is rows[0]) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    selected = args.only or list(FIGURES)
    loop = resolve_loop(args.loop)
    # First, before any grpc object exists in this process: pin the client to its CPU.
    pinning = plan_pinning(not args.no_pin)
    machine = machine_info()
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))

    try:
        bench_args = {"sizes": sizes, "loop": loop, "pinning": pinning}
        ran, peer = run_loop(run_figures(selected, bench_args, peer=not args.no_peer, tracing=args.tracing), loop)
    except KeyboardInterrupt:
        # The servers were stopped on the way out; a partial run writes no results.
        print("interrupted: no results written", file=sys.stderr)
        return 130
    results = {key: ran.get(key) or Figure(key, FIGURES[key][0], "skipped", "not selected (--only)") for key in FIGURES}

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"bench-{stamp}.json"
    chart_path = json_path.with_suffix(".png")
    machine["load_average_after"] = machine_info()["load_average"]
    run = {
        "schema": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "mode": "quick" if args.quick else "full",
        "sizes": asdict(sizes),
        "machine": {**machine, "loop": loop, "pinning": asdict(pinning)},
        "tracing": args.tracing,
        "peer": peer,
        "figures": {key: figure.to_json() for key, figure in results.items()},
        "chart": chart_path.name,
    }
    pinned = (
        f"server CPU {pinning.server_cpus}, client CPU {pinning.client_cpus}"
        if pinning.applied
        else f"not pinned: {pinning.reason}"
    )
    subtitle = f"{run['mode']} run {run['started']}, loop {loop}, {pinned}; origin's runtime: {peer}"
    write_chart(chart_path, list(results.values()), subtitle[:200])
    write_json(json_path, run)

    load_average = f"{machine['load_average']} -> {machine['load_average_after']}"
    tracing = "on" if args.tracing else "off"
    print(f"tracing: {tracing}; loop: {loop}; pinning: {pinned}; load average {load_average}")
    print(f"origin's runtime: {peer}")
    print(summary(results))
    print(f"\nwrote {json_path} and {chart_path.name}")
    return 1 if any(f.status == "error" for f in results.values()) else 0
