"""The ORCA stubs and the OpenTelemetry exporter's protos work in one interpreter (docs/scaling.md).

The `xds-protos` wheel would have brought ORCA stubs, but also old copies of `opentelemetry/proto` and `google/rpc`
that overwrite the real packages' files; the project compiles ORCA protos of its own (protos/xds), into a
descriptor pool of their own. A fresh interpreter imports everything the way an application with tracing would.
"""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.sdk.trace import TracerProvider
from google.rpc import status_pb2
from engine_runtime.generated.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from engine_runtime.generated.xds.service.orca.v3 import orca_pb2_grpc
from engine_runtime.server.app import EngineServer

report = OrcaLoadReport(application_utilization=0.5, named_metrics={"inflight": 2})
assert OrcaLoadReport.FromString(report.SerializeToString()) == report
assert OrcaLoadReport.DESCRIPTOR.full_name == "xds.data.orca.v3.OrcaLoadReport"
TracerProvider().add_span_processor
OTLPSpanExporter(endpoint="127.0.0.1:4317", insecure=True).shutdown()
print(InstrumentationScope(name="engine-runtime").name, status_pb2.Status(code=5).code, orca_pb2_grpc.__name__)
"""


def test_orca_stubs_and_the_otlp_exporter_import_together() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["engine-runtime", "5", "engine_runtime.generated.xds.service.orca.v3.orca_pb2_grpc"]


def test_the_orca_stubs_stay_out_of_the_default_descriptor_pool() -> None:
    # A program that also imports xds-protos registers these full names in the default pool: ours must not.
    program = (
        "from google.protobuf import descriptor_pool\n"
        "import engine_runtime.generated.xds.service.orca.v3.orca_pb2\n"
        "try:\n"
        "    descriptor_pool.Default().FindMessageTypeByName('xds.data.orca.v3.OrcaLoadReport')\n"
        "except KeyError:\n"
        "    print('absent')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "absent", done.stderr
