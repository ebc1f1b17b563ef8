"""What a run produces: figures with their metrics and targets, the machine they ran on, JSON and a chart.

Every metric is a value for the project's server next to the same measurement on the baseline (the bare
grpc.aio server, in the same run), and their ratio; where the origin's runtime (the peer) can do the same, its
value and the project's ratio to it too. A target (see docs/performance.md) applies to the ratio to the
baseline ("at least 20x the bare server"), to the ratio to the peer ("at most the origin's"), or to the value
itself ("p99 under 2 ms"). Figures are generic: a branch adds one by returning a :class:`Figure`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Figure",
    "Metric",
    "Target",
    "latency_metrics",
    "machine_info",
    "percentile",
    "write_chart",
    "write_json",
]

SCHEMA = 1


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Target:
    """``of`` (the ratio, or the value) must be ``op`` ``bound``."""

    of: Literal["ratio", "value"]
    op: Literal["<", "<=", ">", ">=", "=="]
    bound: float
    text: str

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.of == "ratio" else value
        if x is None:
            return None
        return {
            "<": x < self.bound,
            "<=": x <= self.bound,
            ">": x > self.bound,
            ">=": x >= self.bound,
            "==": x == self.bound,
        }[self.op]


@dataclass
class Metric:
    """One number of a figure, for the project's server (``value``), the baseline and the peer (where it applies).

    ``target`` applies to the ratio to the baseline (or the value); ``peer_target`` to the ratio to the peer.
    """

    name: str
    unit: str
    value: float | None
    baseline: float | None = None
    target: Target | None = None
    peer: float | None = None
    peer_target: Target | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def peer_ratio(self) -> float | None:
        if self.value is None or not self.peer:
            return None
        return self.value / self.peer

    @property
    def met(self) -> bool | None:
        verdicts = [] if self.target is None else [self.target.met(self.value, self.ratio)]
        if self.peer_target is not None and self.peer_ratio is not None:
            # A peer that was skipped is no verdict: only a measured ratio to it meets or misses.
            verdicts.append(self.peer_target.met(self.peer_ratio, self.peer_ratio))
        if False in verdicts:
            return False
        return None if not verdicts or None in verdicts else True

    @property
    def targets_text(self) -> str:
        texts = [t.text for t in (self.target, self.peer_target) if t is not None]
        return "; ".join(texts) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "value": self.value,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "peer": self.peer,
            "peer_ratio": self.peer_ratio,
            "target": None if self.target is None else vars(self.target),
            "peer_target": None if self.peer_target is None else vars(self.peer_target),
            "met": self.met,
        }


@dataclass
class Figure:
    """One of the harness's figures: ``status`` is "ok", "skipped" (with a reason) or "error" (with the error)."""

    key: str
    title: str
    status: Literal["ok", "skipped", "error"] = "ok"
    reason: str = ""
    metrics: list[Metric] = field(default_factory=list)
    baseline_label: str = "bare grpc.aio"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        verdicts = [m.met for m in self.metrics if m.target is not None or m.peer_target is not None]
        if self.status != "ok" or not verdicts:
            return None
        return all(v is True for v in verdicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "reason": self.reason or None,
            "baseline": self.baseline_label,
            "met": self.met,
            "metrics": [m.to_json() for m in self.metrics],
            "details": self.details,
        }


def latency_metrics(samples: dict[str, list[float]], target: Target) -> list[Metric]:
    """p50 and p99 (the ``target``'s) of latency samples in ms: ``samples["project"]`` against ``"bare"``, and
    ``"peer"`` where it has any."""
    peer = samples.get("peer") or None
    return [
        Metric(
            f"p{q}",
            "ms",
            percentile(samples["project"], q),
            percentile(samples["bare"], q),
            target if q == 99 else None,
            peer=None if peer is None else percentile(peer, q),
        )
        for q in (50, 99)
    ]


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The facts that make numbers from two runs comparable (or not)."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "uvloop": _version("uvloop"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_json(path: Path, run: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a result file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(run, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


Ratio = tuple[str, float, "Target | None"]
Budget = tuple[str, float, "float | None"]


def _chart_rows(figures: list[Figure]) -> tuple[list[Ratio], list[Budget]]:
    """What the two panels plot: each ratio with its ratio target, each value against its upper bound."""
    ratios: list[Ratio] = []
    budgets: list[Budget] = []
    for figure in figures:
        if figure.status != "ok":
            continue
        for metric in figure.metrics:
            label = f"{figure.key}: {metric.name}"
            if metric.ratio is not None:
                target = metric.target if metric.target is not None and metric.target.of == "ratio" else None
                ratios.append((label, metric.ratio, target))
            if metric.peer_ratio is not None:
                ratios.append((f"{label} / origin", metric.peer_ratio, metric.peer_target))
            target = metric.target
            # Only upper bounds read as a budget (value / bound under 1 is met); counts like "all N" do not.
            upper = target is not None and target.of == "value" and target.op in ("<", "<=") and target.bound
            if upper and target is not None and metric.value is not None:
                share = None if metric.baseline is None else metric.baseline / target.bound
                budgets.append((label, metric.value / target.bound, share))
    return ratios, budgets


def write_chart(path: Path, figures: list[Figure], subtitle: str) -> None:
    """Two panels: ratios (to bare, to the peer) against ratio targets, and values as a fraction of absolute targets."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    ratios, budgets = _chart_rows(figures)
    fig, (left, right) = plt.subplots(1, 2, figsize=(18, 7), gridspec_kw={"width_ratios": [3, 2]})
    fig.suptitle(f"engine-runtime vs bare grpc.aio and the origin's runtime (same run)\n{subtitle}", fontsize=10)
    _plot_ratios(left, ratios)
    _plot_budgets(right, budgets)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_ratios(left: Any, ratios: list[Ratio]) -> None:
    xs = range(len(ratios))
    colors = []
    for _, ratio, target in ratios:
        met = None if target is None else target.met(None, ratio)
        colors.append("tab:gray" if met is None else ("tab:green" if met else "tab:red"))
    bars = left.bar(xs, [r for _, r, _ in ratios], color=colors)
    for bar, (label, _, _) in zip(bars, ratios, strict=True):
        if label.endswith("/ origin"):
            bar.set_hatch("..")  # a ratio to the origin's runtime, not to the bare server
    left.bar_label(bars, labels=[f"{r:.3g}x" for _, r, _ in ratios], fontsize=7)
    left.axhline(1.0, color="black", linewidth=0.8)
    for x, (_, _, target) in zip(xs, ratios, strict=True):
        if target is not None:
            left.hlines(target.bound, x - 0.45, x + 0.45, colors="tab:blue", linestyles="dashed")
            left.annotate(
                target.text,
                (x, target.bound),
                textcoords="offset points",
                xytext=(0, -10),  # below the line: the bar's own label sits above the bar
                ha="center",
                fontsize=7,
                color="tab:blue",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
            )
    left.set_yscale("log")
    left.set_xticks(list(xs), [label for label, _, _ in ratios], rotation=60, ha="right", fontsize=7)
    left.set_ylabel("project / bare, or / origin's runtime (log)")
    left.set_title("ratios to the bare server and the origin's runtime (dashed: target; green met, red missed)")


def _plot_budgets(right: Any, budgets: list[Budget]) -> None:
    # The bare server's bar beside the project's: a target the bare server misses too is the machine's limit.
    ys = [float(y) for y in range(len(budgets))]
    project = [p for _, p, _ in budgets]
    bars = right.barh(
        [y + 0.2 for y in ys], project, height=0.4, color=["tab:green" if p < 1 else "tab:red" for p in project]
    )
    right.bar_label(bars, labels=[f"project {p:.2f}" for p in project], fontsize=7)
    baseline = [b or 0.0 for _, _, b in budgets]
    bars = right.barh([y - 0.2 for y in ys], baseline, height=0.4, color="lightgray", hatch="//")
    right.bar_label(bars, labels=[f"bare {b:.2f}" for b in baseline], fontsize=7)
    right.axvline(1.0, color="tab:blue", linestyle="dashed")
    right.set_yticks(ys, [label.replace("\n", " ") for label, _, _ in budgets], fontsize=7)
    right.set_xlabel("value / absolute target (under 1 is met)")
    right.set_title("absolute targets (hatched: bare server)")
