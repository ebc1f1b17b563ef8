"""The one metrics endpoint of ``engine-server --workers N --metrics-port P``: every worker's metrics, merged.

The workers write their metrics in prometheus-client's multiprocess mode to a temporary directory the supervisor
creates (``PROMETHEUS_MULTIPROC_DIR``, which the spawned workers inherit), and the supervisor serves the merged
view: counters and histograms summed over every worker that ever ran, the in-flight gauge over the live ones,
and each process's ``process_*`` metrics labelled ``worker`` (``supervisor``, ``0``, ``1``, ...). The directory
is removed on close.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .app import StartupError
from .metrics import MetricsEndpoint, MetricsStartError

__all__ = ["MULTIPROC_ENV", "WorkerMetrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The processes whose ``process_*`` metrics are served, by their ``worker`` label: a pid, or "self".
Processes = Callable[[], dict[str, int | str]]


class WorkerMetrics:
    """The multiprocess directory and the endpoint serving its merged view; see the module's docstring."""

    def __init__(self, directory: str, endpoint: MetricsEndpoint) -> None:
        self.directory = directory
        self.endpoint = endpoint

    @classmethod
    def start(cls, host: str, port: int, processes: Processes) -> WorkerMetrics:
        """Create the directory, point the workers to come at it, and serve the merged view on ``host:port``."""
        try:
            directory = tempfile.mkdtemp(prefix="engine-server-metrics-")
        except OSError as error:
            raise StartupError(
                f"--workers with --metrics-port needs a writable temporary directory (TMPDIR): {error.strerror}"
            ) from None
        # Read by prometheus-client when a worker imports it: the workers inherit the environment.
        os.environ[MULTIPROC_ENV] = directory
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        registry.register(_ProcessesCollector(processes))
        PlatformCollector(registry=registry)
        try:
            endpoint = MetricsEndpoint.start(registry, host, port)
        except MetricsStartError as error:
            _remove(directory)
            raise StartupError(str(error)) from None
        return cls(directory, endpoint)

    def process_died(self, pid: int) -> None:
        """Forget a worker's live gauges (its in-flight count); its counters and histograms stay in the totals."""
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop serving and remove the directory."""
        self.endpoint.close()
        _remove(self.directory)


def _remove(directory: str) -> None:
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(directory, ignore_errors=True)


class _ProcessesCollector:
    """``process_*`` metrics of the supervisor and of every worker, one family each, labelled ``worker``."""

    def __init__(self, processes: Processes) -> None:
        self._processes = processes

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for label, pid in self._processes().items():
            for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": label}, sample.value)
        return list(families.values())


def _constant(pid: int | str) -> Callable[[], int | str]:
    return lambda: pid
