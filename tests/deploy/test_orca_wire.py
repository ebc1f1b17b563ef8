"""Our ORCA stubs keep the upstream wire contract: a stock ORCA client decodes our reports, we decode its requests.

Where the stubs come from is in docs/scaling.md (*Where the ORCA stubs come from*). UPSTREAM
below is cncf/xds's contract as plain data: each field's name, number, type, label and, for a message or map field,
the type it holds. It was read by hand from the descriptors of the `xds-protos` 1.85.0 wheel, in a scratch venv
(the wheel cannot be installed beside the project: docs/scaling.md says why). Our descriptors must equal it field
for field, and a decoder built from UPSTREAM alone, in a pool of its own, must read every field our stub writes.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, duration_pb2, json_format, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.descriptor_pb2 import DescriptorProto, FieldDescriptorProto, FileDescriptorProto

from engine_runtime.generated.xds.data.orca.v3 import orca_load_report_pb2
from engine_runtime.generated.xds.service.orca.v3 import orca_pb2
from engine_runtime.generated.xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

Field = tuple[str, int, str, str, str]

DOUBLE, STRING, UINT64, MESSAGE = "TYPE_DOUBLE", "TYPE_STRING", "TYPE_UINT64", "TYPE_MESSAGE"
OPTIONAL, REPEATED = "LABEL_OPTIONAL", "LABEL_REPEATED"
REPORT = "xds.data.orca.v3.OrcaLoadReport"
REQUEST = "xds.service.orca.v3.OrcaLoadReportRequest"
MAP_ENTRY = [("key", 1, STRING, OPTIONAL, ""), ("value", 2, DOUBLE, OPTIONAL, "")]
UPSTREAM: dict[str, list[Field]] = {
    REPORT: [
        ("cpu_utilization", 1, DOUBLE, OPTIONAL, ""),
        ("mem_utilization", 2, DOUBLE, OPTIONAL, ""),
        ("rps", 3, UINT64, OPTIONAL, ""),
        ("request_cost", 4, MESSAGE, REPEATED, f".{REPORT}.RequestCostEntry"),
        ("utilization", 5, MESSAGE, REPEATED, f".{REPORT}.UtilizationEntry"),
        ("rps_fractional", 6, DOUBLE, OPTIONAL, ""),
        ("eps", 7, DOUBLE, OPTIONAL, ""),
        ("named_metrics", 8, MESSAGE, REPEATED, f".{REPORT}.NamedMetricsEntry"),
        ("application_utilization", 9, DOUBLE, OPTIONAL, ""),
    ],
    f"{REPORT}.RequestCostEntry": MAP_ENTRY,
    f"{REPORT}.UtilizationEntry": MAP_ENTRY,
    f"{REPORT}.NamedMetricsEntry": MAP_ENTRY,
    REQUEST: [
        ("report_interval", 1, MESSAGE, OPTIONAL, ".google.protobuf.Duration"),
        ("request_cost_names", 2, STRING, REPEATED, ""),
    ],
}
MAP_ENTRIES = {f"{REPORT}.RequestCostEntry", f"{REPORT}.UtilizationEntry", f"{REPORT}.NamedMetricsEntry"}
DEPRECATED = {f"{REPORT}.rps"}
FILES = {REPORT: "xds/data/orca/v3/orca_load_report.proto", REQUEST: "xds/service/orca/v3/orca.proto"}
# Full name, request, response, client streaming, server streaming: the path /OpenRcaService/StreamCoreMetrics.
METHOD = ("xds.service.orca.v3.OpenRcaService.StreamCoreMetrics", REQUEST, REPORT, False, True)


def shape(message: Descriptor) -> dict[str, list[Field]]:
    """Full name -> fields as UPSTREAM writes them, for a message and the (map entry) messages nested in it."""
    proto = DescriptorProto()
    message.CopyToProto(proto)
    label, kind = FieldDescriptorProto.Label.Name, FieldDescriptorProto.Type.Name
    found = {message.full_name: [(f.name, f.number, kind(f.type), label(f.label), f.type_name) for f in proto.field]}
    for nested in message.nested_types:
        found |= shape(nested)
    return found


def camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def every_message(message: Descriptor) -> list[Descriptor]:
    return [message, *(n for nested in message.nested_types for n in every_message(nested))]


def test_our_messages_have_exactly_the_upstream_fields() -> None:
    ours = [
        orca_load_report_pb2.DESCRIPTOR.message_types_by_name["OrcaLoadReport"],
        orca_pb2.DESCRIPTOR.message_types_by_name["OrcaLoadReportRequest"],
    ]
    assert shape(ours[0]) | shape(ours[1]) == UPSTREAM
    messages = [m for message in ours for m in every_message(message)]
    assert {m.full_name for m in messages if m.GetOptions().map_entry} == MAP_ENTRIES
    fields = [f for m in messages for f in m.fields]
    assert {f.full_name for f in fields if f.GetOptions().deprecated} == DEPRECATED
    # The same names give the same JSON names, unless one overrides its default: none of ours does.
    assert all(f.json_name == camel_case(f.name) for f in fields)
    assert {m.full_name: m.file.name for m in ours} == FILES


def test_the_service_has_the_upstream_method() -> None:
    method = orca_pb2.DESCRIPTOR.services_by_name["OpenRcaService"].methods_by_name["StreamCoreMetrics"]
    io = (method.input_type.full_name, method.output_type.full_name)
    assert (method.full_name, *io, method.client_streaming, method.server_streaming) == METHOD


def message_proto(full_name: str) -> DescriptorProto:
    message = DescriptorProto(name=full_name.rsplit(".", 1)[1])
    for name, number, kind, label, type_name in UPSTREAM[full_name]:
        field = message.field.add(name=name, number=number)
        field.type, field.label = FieldDescriptorProto.Type.Value(kind), FieldDescriptorProto.Label.Value(label)
        if type_name:
            field.type_name = type_name
    for nested in sorted(name for name in UPSTREAM if name.startswith(f"{full_name}.")):
        entry = message_proto(nested)
        entry.options.map_entry = nested in MAP_ENTRIES
        message.nested_type.append(entry)
    return message


def upstream_pool() -> descriptor_pool.DescriptorPool:
    """A pool of the upstream contract built from UPSTREAM alone: what a stock client decodes with."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    for full_name, imports in ((REPORT, []), (REQUEST, ["google/protobuf/duration.proto"])):
        package = full_name.rsplit(".", 1)[0]
        file = FileDescriptorProto(name=FILES[full_name], package=package, syntax="proto3", dependency=imports)
        file.message_type.append(message_proto(full_name))
        pool.AddSerializedFile(file.SerializeToString())
    return pool


def test_a_decoder_of_the_upstream_contract_reads_every_field_of_our_report() -> None:
    report = orca_load_report_pb2.OrcaLoadReport(
        cpu_utilization=0.25,
        mem_utilization=0.5,
        rps=7,
        request_cost={"db": 1.5},
        utilization={"gpu": 0.75},
        rps_fractional=12.5,
        eps=0.125,
        named_metrics={"inflight": 3.0, "queued": 2.0},
        application_utilization=0.375,
    )
    assert len(report.ListFields()) == len(UPSTREAM[REPORT])  # every field set, none at its default
    theirs = message_factory.GetMessageClass(upstream_pool().FindMessageTypeByName(REPORT))
    decoded = theirs.FromString(report.SerializeToString())
    assert json_format.MessageToDict(decoded) == json_format.MessageToDict(report)
    # Each field landed in the one of the same name: a number that differed would leave it unknown, out of the dict.
    assert json_format.MessageToDict(decoded)["namedMetrics"] == {"inflight": 3.0, "queued": 2.0}


def test_our_stub_reads_a_request_of_the_upstream_contract() -> None:
    theirs = message_factory.GetMessageClass(upstream_pool().FindMessageTypeByName(REQUEST))
    sent = json_format.ParseDict({"reportInterval": "0.250s", "requestCostNames": ["db", "cache"]}, theirs())
    request = OrcaLoadReportRequest.FromString(sent.SerializeToString())
    assert (request.report_interval.ToMilliseconds(), list(request.request_cost_names)) == (250, ["db", "cache"])
