"""What a run produces: figures, their metrics and targets, the machine they ran on, and JSON (:mod:`.chart` draws).

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
