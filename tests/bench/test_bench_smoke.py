"""The benchmark harness runs end to end: ``python -m benchmarks --quick`` writes a complete result and a chart.

Speed is measured by the benchmarks and never asserted here: a loaded CI machine must not fail this test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import FIGURES, PEER_FIGURES

ROOT = Path(__file__).resolve().parents[2]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.soak
def test_quick_run_writes_every_figure_and_a_chart(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-3000:]}"
    results = list(tmp_path.glob("bench-*.json"))
    assert len(results) == 1, output
    data = json.loads(results[0].read_text())

    assert (tmp_path / data["chart"]).stat().st_size > 0, output
    assert data["mode"] == "quick"
    machine = data["machine"]
    for key in ("cpu_count", "cpu_model", "python", "grpcio", "loop", "pinning"):
        assert machine[key] not in (None, ""), key
    assert isinstance(machine["pinning"]["applied"], bool)

    assert set(data["figures"]) == set(FIGURES)
    for name, figure in data["figures"].items():
        if figure["status"] == "skipped":
            assert figure["reason"], f"{name} is skipped without a reason"
            continue
        assert figure["status"] == "ok", f"{name}: {figure['status']}: {figure['reason']}\n{output}"
        assert figure["metrics"], name
        for metric in figure["metrics"]:
            assert _is_number(metric["value"]), (name, metric)
            if metric["baseline"]:
                assert _is_number(metric["ratio"]), (name, metric)
    # The origin's runtime runs where its environment exists (make peer-venv), and is skipped with a reason otherwise.
    if data["peer"].startswith("skipped: "):
        assert all(data["figures"][name]["details"].get("peer") == data["peer"] for name in PEER_FIGURES)
    else:
        for name in PEER_FIGURES:
            peer = [m["peer"] for m in data["figures"][name]["metrics"] if m["peer"] is not None]
            assert peer and all(_is_number(p) for p in peer), (name, data["figures"][name])
    assert run.returncode == 0, output
