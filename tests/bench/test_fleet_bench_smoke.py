"""The fleet benchmark runs end to end on a tiny load and writes every figure (their values are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.soak
def test_a_short_fleet_run_writes_balance_and_scale_out(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.fleet_balance", "--out", str(tmp_path)]
    tiny = [
        "--seconds",
        "1",
        "--warmup",
        "0.3",
        "--rates",
        "10",
        "--rate",
        "10",
        "--long-s",
        "1",
        "--connection-age",
        "1",
    ]
    run = subprocess.run([*command, *tiny], cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    [written] = tmp_path.glob("fleet-*.json")
    results = json.loads(written.read_text())
    runs = {(r["policy"], r["pattern"]) for r in results["balance"] if r["rate"] == 10}
    assert runs == {(p, s) for p in ("round_robin", "weighted_round_robin") for s in ("random", "periodic")}
    assert all(len(r["mean_inflight_per_replica"]) == 3 and r["samples"] > 0 for r in results["balance"])
    assert results["scale_out"]["calls_total_within_one_age"] > 0
    assert len(results["load_average_before"]) == 3
