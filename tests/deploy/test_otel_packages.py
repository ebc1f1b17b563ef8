"""The `otel` extra imports cleanly beside the ORCA stubs of xds-protos, in one fresh interpreter.

xds-protos ships old copies of ``opentelemetry/proto/*``; installed after opentelemetry-proto, they overwrite it
and the OTLP exporter fails to import (``cannot import name 'InstrumentationScope'``). ``make venv`` and the
Dockerfile run scripts/otel_proto_last.py, which reinstalls opentelemetry-proto last when both are there.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

IMPORTS = """
import importlib.util
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
if importlib.util.find_spec("xds") is not None:
    from xds.data.orca.v3 import orca_load_report_pb2
    from xds.service.orca.v3 import orca_pb2
    print("orca")
print("otlp")
"""


def test_the_otlp_exporters_and_the_orca_stubs_import_in_one_interpreter() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    expected = ["orca", "otlp"] if importlib.util.find_spec("xds") is not None else ["otlp"]
    assert done.stdout.split() == expected
