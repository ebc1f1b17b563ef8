"""Engines: the typed `Engine[Req, Resp]`, its type-erased form `AnyEngine`, and the local implementation.

The origin runtime erases `AsyncEngine<Req, Resp, E>` into `AnyAsyncEngine` keyed by `TypeId`s and gets the
typed engine back with a checked `downcast`. Here the type ids are protobuf full names (unique within a
descriptor pool), so the check also works for an engine on another machine::

    any_engine = registry.get("echo")
    any_engine.request_type                              # "examples.v1.EchoRequest"
    echo = any_engine.downcast(EchoRequest, EchoResponse)  # Engine[EchoRequest, EchoResponse], or None
    stream = await echo.generate(EchoRequest(text="a b"))

What a user writes is an *engine function*: an async generator ``(request, ctx)``, a coroutine ``(request, ctx)``
returning one response (a unary engine), a plain generator or function (a sync engine, run in a worker thread:
:mod:`.threads`), or an object whose ``generate(request, ctx)`` is any of these.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import Message

from .budget import OutputBudget
from .context import Context
from .errors import Code, EngineError, EngineFailed
from .protocol import check_request_type
from .pump import DEFAULT_KILL_TIMEOUT, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_ITEMS, LocalStream
from .stream import ResponseStream
from .threads import threaded_function, threaded_generator

__all__ = ["AnyEngine", "Engine", "LocalEngine"]

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def full_name(cls: type[Message] | None) -> str | None:
    return None if cls is None else cls.DESCRIPTOR.full_name


class AnyEngine(abc.ABC):
    """A type-erased engine: its name, its type ids (protobuf full names), and a checked :meth:`downcast`.

    Local engines (from a registry) and remote ones (from ``client.EngineClient.get``) are both `AnyEngine`.
    """

    def __init__(
        self,
        name: str,
        *,
        request_type: str,
        response_type: str,
        error_type: str | None,
        unary: bool,
        description: str = "",
        resumable: bool = False,
    ) -> None:
        self.name = name
        self.request_type = request_type
        self.response_type = response_type
        self.error_type = error_type
        self.unary = unary
        self.description = description
        # The engine's promise: the same request with `ctx.resume_from = N` continues after the first N items.
        self.resumable = resumable

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.request_type} -> {self.response_type}>"

    def downcast(
        self, request: type[Req], response: type[Resp], error: type[Message] | None = None
    ) -> Engine[Req, Resp] | None:
        """The typed engine if the type ids match, else ``None``.

        With ``error`` the engine's declared error type must match too; without it any declared error type
        (or none) is accepted.

        Example::

            echo = registry.get("echo").downcast(EchoRequest, EchoResponse)
        """
        if full_name(request) != self.request_type or full_name(response) != self.response_type:
            return None
        if error is not None and full_name(error) != self.error_type:
            return None
        return Engine(self, request, response)

    @abc.abstractmethod
    async def generate(self, request: Message, context: Context | None = None) -> ResponseStream[Any]:
        """Start a generation, untyped; a fresh :class:`Context` is made when none is given.

        Prefer :meth:`downcast` and the typed engine's ``generate``, which is this same call.
        """


class Engine(Generic[Req, Resp]):
    """A typed engine, as :meth:`AnyEngine.downcast` returns it.

    Example::

        stream = await engine.generate(EchoRequest(text="a b"))   # ResponseStream[EchoResponse]
        async for item in stream:
            ...
    """

    def __init__(self, erased: AnyEngine, request: type[Req], response: type[Resp]) -> None:
        self.erased = erased
        self.request_class = request
        self.response_class = response

    @property
    def name(self) -> str:
        return self.erased.name

    def __repr__(self) -> str:
        return f"Engine[{self.erased.request_type}, {self.erased.response_type}]({self.name!r})"

    async def generate(self, request: Req, context: Context | None = None) -> ResponseStream[Resp]:
        """Start a generation; a fresh :class:`Context` is made when none is given."""
        return cast(ResponseStream[Resp], await self.erased.generate(request, context))


class LocalEngine(AnyEngine):
    """An engine that runs in this process. :class:`EngineRegistry` makes these; the servicer serves them."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Any, Context], AsyncIterator[Any]],
        *,
        request: type[Message],
        response: type[Message],
        error: type[Message] | None,
        unary: bool,
        description: str = "",
        health_request: Message | None = None,
        resumable: bool = False,
        max_concurrency: int | None = None,
    ) -> None:
        super().__init__(
            name,
            request_type=request.DESCRIPTOR.full_name,
            response_type=response.DESCRIPTOR.full_name,
            error_type=full_name(error),
            unary=unary,
            description=description,
            resumable=resumable,
        )
        self.request_class = request
        self.response_class = response
        self.error_class = error
        self.health_request = health_request
        if max_concurrency is not None and (not isinstance(max_concurrency, int) or max_concurrency < 0):
            raise ValueError(f"engine {name!r}: max_concurrency must be a whole number >= 0, got {max_concurrency!r}")
        self.max_concurrency = max_concurrency
        """Generations a server runs at once (0: no limit; None: ``--max-engine-concurrency`` decides)."""
        self._fn = fn
        self.check_response = _response_check(name, response)
        """Raise :class:`EngineFailed` unless the argument is of the engine's response type."""

    def check_resume(self, resume_from: int) -> None:
        """Refuse (FAILED_PRECONDITION, naming the engine) to continue after ``resume_from`` items, unless the
        engine is resumable or ``resume_from`` is 0."""
        if resume_from and not self.resumable:
            raise EngineError(
                Code.FAILED_PRECONDITION,
                f"engine {self.name!r} is not resumable: it cannot continue after {resume_from} items "
                "(resume_from must be 0)",
            )

    async def generate(
        self,
        request: Message,
        context: Context | None = None,
        *,
        encode: Callable[[Any], bytes] | None = None,
        max_items: int = DEFAULT_MAX_BATCH_ITEMS,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        kill_timeout: float = DEFAULT_KILL_TIMEOUT,
        budget: OutputBudget | None = None,
    ) -> LocalStream[Any]:
        """Start the engine in a task of its own and return its stream.

        The keyword arguments are the servicer's: ``encode`` turns each item into bytes inside the engine's task
        (and must check the item's type, as ``wire.item_encoder(engine.response_class, engine.check_response)``
        does), and the batch budget then counts those bytes; ``max_items``/``max_bytes`` bound what may wait in
        the buffer for the consumer; ``kill_timeout`` is how long a killed engine has to end before its stream
        gives up on it (the task is then a zombie, see :mod:`.zombies`).

        A context with ``resume_from`` over 0 is refused (FAILED_PRECONDITION) unless the engine is resumable.
        """
        check_request_type(self.name, self.request_type, request.DESCRIPTOR.full_name)
        context = context if context is not None else Context()
        self.check_resume(context.resume_from)
        # A unary engine resumed after its one response has nothing left to produce: it is not run again.
        source = _nothing() if self.unary and context.resume_from else self._fn(request, context)
        return LocalStream(
            source,
            context,
            engine=self.name,
            check=self.check_response,
            encode=encode,
            max_items=max_items,
            max_bytes=max_bytes,
            kill_timeout=kill_timeout,
            budget=budget,
        )


async def _nothing() -> AsyncIterator[Any]:
    return
    yield  # an async generator that yields nothing


def _response_check(engine: str, response: type[Message]) -> Callable[[Any], None]:
    expected = response.DESCRIPTOR.full_name

    def check(item: Any) -> None:
        if type(item) is response:
            return
        descriptor = getattr(item, "DESCRIPTOR", None)
        if isinstance(item, Message) and descriptor is not None and descriptor.full_name == expected:
            return
        got = descriptor.full_name if descriptor is not None else type(item).__qualname__
        raise EngineFailed(f"engine {engine!r} yielded a {got} where its response type is {expected}")

    return check


def as_generator(engine: Any, name: str) -> tuple[Callable[[Any, Context], AsyncIterator[Any]], bool]:
    """Adapt what the user registered into an async-generator function; also tell whether it is unary."""
    if isinstance(engine, AnyEngine | Engine):
        erased = engine.erased if isinstance(engine, Engine) else engine

        async def delegate(request: Any, ctx: Context) -> AsyncIterator[Any]:
            # A child context: stop and kill reach the inner generation, and its id stays distinct (the inner
            # engine may be this very server, reached over the network). It is the same generation: a resumed
            # one resumes the inner one too.
            child = ctx.child()
            child.resume_from = ctx.resume_from
            stream = await erased.generate(request, child)
            async for item in stream:
                yield item

        return delegate, erased.unary

    fn = getattr(engine, "generate", engine)
    if inspect.isasyncgenfunction(fn):
        return cast(Callable[[Any, Context], AsyncIterator[Any]], fn), False
    if inspect.iscoroutinefunction(fn):
        unary_fn = cast(Callable[[Any, Context], Awaitable[Any]], fn)

        async def unary(request: Any, ctx: Context) -> AsyncIterator[Any]:
            yield await unary_fn(request, ctx)

        return unary, True
    # Plain functions are sync engines: they run in worker threads, never on the event loop.
    if inspect.isgeneratorfunction(fn):
        return threaded_generator(fn), False
    if callable(fn) and not isinstance(fn, type):
        return threaded_function(fn), True
    raise TypeError(
        f"engine {name!r} must be an async generator function (request, ctx), a coroutine function returning "
        f"one response, a plain generator or function (run in a thread), an object with such a `generate`, or an "
        f"AnyEngine; got {engine!r}"
    )
