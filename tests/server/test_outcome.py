"""The end of a generation as one value: each ending's status code and the status sent for it."""

from __future__ import annotations

import grpc
import pytest

from engine_runtime.server import Aborted, EngineError, EngineFailed, ResourceExhausted, Unavailable
from engine_runtime.server.outcome import Cause, Ending, How, status_of


@pytest.mark.parametrize(
    ("ending", "code", "sent"),
    [
        (Ending(How.COMPLETED), grpc.StatusCode.OK, None),
        (Ending(How.STOPPED, Cause.STOP_REQUEST), grpc.StatusCode.OK, None),
        (Ending(How.STOPPED, Cause.DRAIN), grpc.StatusCode.OK, None),
        (Ending(How.KILLED, Cause.CLIENT_CANCEL), grpc.StatusCode.CANCELLED, None),
        (Ending(How.KILLED, Cause.DEADLINE), grpc.StatusCode.DEADLINE_EXCEEDED, None),
        (Ending(How.KILLED, Cause.STOP_REQUEST), grpc.StatusCode.ABORTED, Aborted),
        (Ending(How.KILLED, Cause.DRAIN), grpc.StatusCode.UNAVAILABLE, Unavailable),
        (Ending(How.KILLED, Cause.ENGINE, Aborted("killed by engine")), grpc.StatusCode.ABORTED, Aborted),
        (Ending(How.FAILED, None, EngineFailed("engine 'x' failed")), grpc.StatusCode.INTERNAL, EngineFailed),
        (
            Ending(How.EXPIRED, Cause.QUEUE_TIMEOUT, ResourceExhausted("waited 2.000s in the queue")),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            ResourceExhausted,
        ),
        (
            Ending(How.EXPIRED, Cause.DEADLINE, EngineError(grpc.StatusCode.DEADLINE_EXCEEDED, "waited 0.980s")),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            EngineError,
        ),
        (Ending(How.KILLED, Cause.DRAIN, Unavailable("queued")), grpc.StatusCode.UNAVAILABLE, Unavailable),
    ],
)
def test_each_ending_has_one_status(ending: Ending, code: grpc.StatusCode, sent: type[EngineError] | None) -> None:
    assert ending.code == code
    error = status_of(ending, "r1")
    assert (type(error) if error is not None else None) is sent
    if error is not None:
        assert error.code == code


def test_an_engines_own_error_is_sent_as_it_is_but_an_internal_one_names_the_request() -> None:
    own = EngineError(grpc.StatusCode.FAILED_PRECONDITION, "cold")
    assert status_of(Ending(How.FAILED, None, own), "r1") is own
    failed = status_of(Ending(How.FAILED, None, EngineFailed("engine 'x' failed")), "r1")
    assert failed is not None and failed.message == "engine 'x' failed (request id r1)"
