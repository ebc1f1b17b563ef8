"""The shared wire contract: codes and error classes both ways, rich status details, the request check."""

from __future__ import annotations

import grpc
import pytest

from engine_runtime import server
from engine_runtime.generated.examples.v1.examples_pb2 import CountError
from engine_runtime.server import Aborted, Code, EngineError, InvalidRequest
from engine_runtime.server.protocol import (
    STATUS_DETAILS_KEY,
    check_request_type,
    error_for,
    error_from_status,
    status_trailer,
    type_name,
)

SUBCLASSES = [
    server.EngineNotFound, server.InvalidRequest, server.AlreadyExists, server.ResourceExhausted,
    server.EngineFailed, server.Aborted, server.Unavailable, server.DataLoss,
]  # fmt: skip


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_each_code_with_a_subclass_maps_to_it_and_back(cls: type[EngineError]) -> None:
    grpc_code = grpc.StatusCode[cls.default_code.name]
    for code in (cls.default_code, grpc_code, grpc_code.value[0], cls.default_code.name):
        error = error_for(code, "m")
        assert type(error) is cls and error.code == grpc_code and error.message == "m"


def test_a_code_without_a_subclass_is_the_base_class() -> None:
    error = error_for(grpc.StatusCode.PERMISSION_DENIED, "no")
    assert type(error) is EngineError and error.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("status", list(grpc.StatusCode))
def test_every_code_compares_equal_to_grpcs_and_to_its_number(status: grpc.StatusCode) -> None:
    code = Code.of(status)
    assert code == status and status == code and code == status.value[0]
    assert (code != status) is False
    others = [s for s in grpc.StatusCode if s is not status]
    assert all(code != other for other in others)
    assert {code: 1}[Code(status.value[0])] == 1  # still hashable as the enum member it is


def test_an_engine_error_made_with_grpcs_code_compares_equal_to_it() -> None:
    error = EngineError(grpc.StatusCode.FAILED_PRECONDITION, "no model loaded")
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.code is Code.FAILED_PRECONDITION


def test_the_rich_status_carries_the_typed_detail_both_ways() -> None:
    error = EngineError(Code.FAILED_PRECONDITION, "cold", detail=CountError(field="count", value=3))
    trailer = status_trailer(error)
    assert trailer is not None
    back = error_from_status(grpc.StatusCode.FAILED_PRECONDITION, "cold", [(STATUS_DETAILS_KEY, trailer)], CountError)
    assert back.code == grpc.StatusCode.FAILED_PRECONDITION and back.detail == CountError(field="count", value=3)
    assert status_trailer(EngineError(Code.INTERNAL, "x")) is None


def test_a_trailer_that_does_not_parse_loses_the_detail_not_the_status() -> None:
    back = error_from_status(Code.ABORTED, None, [(STATUS_DETAILS_KEY, b"\xff\xff")], CountError)
    assert isinstance(back, Aborted) and back.detail is None and back.message == "ABORTED"


def test_the_request_check_names_both_types() -> None:
    check_request_type("echo", "examples.v1.EchoRequest", "examples.v1.EchoRequest")
    with pytest.raises(InvalidRequest, match="expects a request of type examples.v1.EchoRequest, received x.Y"):
        check_request_type("echo", "examples.v1.EchoRequest", "x.Y")
    with pytest.raises(InvalidRequest, match="received an empty Any"):
        check_request_type("echo", "examples.v1.EchoRequest", type_name(""))
    assert type_name("type.googleapis.com/examples.v1.EchoRequest") == "examples.v1.EchoRequest"
