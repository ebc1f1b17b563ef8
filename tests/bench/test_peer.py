"""The origin's runtime as a peer in the benchmarks: skipped with a reason when it is not installed, measured
when it is. Neither test installs it (``make peer-venv`` does); speed is never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from benchmarks.cli import FIGURES, run_figure
from benchmarks.harness import QUICK, Bench
from benchmarks.peer_runtime import VENV, Peer, PeerFailed, peer_python
from benchmarks.procs import Pinning
from benchmarks.report import Figure, Metric

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, figure: str, env: dict[str, str]) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", figure, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    output = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 0, output
    (result,) = tmp_path.glob("bench-*.json")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def test_a_missing_peer_environment_is_named_with_the_command_that_makes_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-venv" / "bin" / "python"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_PEER_PYTHON", str(missing))
        python, reason = peer_python()
    assert python is None
    assert str(missing) in reason and "make peer-venv" in reason


def test_the_run_goes_on_without_the_peer_and_says_why(tmp_path: Path) -> None:
    data = _run(tmp_path, "cancel", {"BENCH_PEER_PYTHON": str(tmp_path / "missing" / "python")})
    assert data["peer"].startswith("skipped: ") and "make peer-venv" in data["peer"]
    cancel = data["figures"]["cancel"]
    assert cancel["status"] == "ok", cancel
    assert cancel["details"]["peer"] == data["peer"]
    assert all(metric["peer"] is None and metric["value"] is not None for metric in cancel["metrics"])


@pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="the peer is not installed: make peer-venv")
def test_the_installed_peer_is_measured_in_the_same_run(tmp_path: Path) -> None:
    data = _run(tmp_path, "cancel", {})
    assert data["peer"].startswith("ai-dynamo-runtime "), data["peer"]
    cancel = data["figures"]["cancel"]
    assert cancel["status"] == "ok", cancel
    for metric in cancel["metrics"]:
        assert isinstance(metric["peer"], float) and metric["peer"] > 0, metric
        assert metric["peer_ratio"] == pytest.approx(metric["value"] / metric["peer"])
    assert cancel["details"]["kills_not_recorded"]["peer"] == 0


def test_a_peer_failing_during_a_figure_is_left_out_and_the_figure_runs_again_without_it() -> None:
    async def figure(bench: Bench) -> Figure:
        if bench.peer is not None:
            raise PeerFailed("the peer's client exited with code 1")
        return Figure("flaky", "a figure", metrics=[Metric("x", "ms", 1.0)])

    bench = Bench(QUICK, "asyncio", Pinning(False), {}, peer=cast(Peer, object()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(FIGURES, "flaky", ("a figure", figure))
        result = asyncio.run(run_figure("flaky", bench))
    assert result.status == "ok"
    assert bench.peer is None
    assert bench.peer_reason == "it failed during flaky: the peer's client exited with code 1"
