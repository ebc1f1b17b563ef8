"""`EngineRegistry`: engines by name, the origin's ``HashMap<String, Arc<dyn AnyAsyncEngine>>``.

Example::

    registry = EngineRegistry()

    @registry.engine("echo", request=EchoRequest, response=EchoResponse, description="Echoes words.")
    async def echo(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        for word in request.text.split():
            if ctx.is_stopped():
                return
            yield EchoResponse(text=word)

    echo_engine = registry.get("echo").downcast(EchoRequest, EchoResponse)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.protobuf.message import Message

from .engine import AnyEngine, Engine, LocalEngine, as_generator
from .errors import EngineNotFound
from .protocol import shorten

__all__ = ["EngineRegistry"]

F = TypeVar("F", bound=Callable[..., Any])


class EngineRegistry:
    """Engines registered under unique names; what ``engine-server`` serves."""

    def __init__(self) -> None:
        self._engines: dict[str, LocalEngine] = {}

    def engine(
        self,
        name: str,
        *,
        request: type[Message],
        response: type[Message],
        error: type[Message] | None = None,
        description: str | None = None,
        health_request: Message | None = None,
        resumable: bool = False,
        max_concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated async generator (or unary coroutine) function under ``name``.

        ``description`` defaults to the first line of the function's docstring. ``health_request``, if given,
        is a request the server runs now and then while the engine is idle to tell whether it is healthy.
        ``resumable=True`` is the engine's promise that the same request with ``ctx.resume_from = N`` continues
        after the first N items, so a broken stream can continue on another replica (docs/scaling.md).
        ``max_concurrency`` is as for :meth:`register`.
        """

        def decorate(fn: F) -> F:
            self.register(
                name,
                fn,
                request=request,
                response=response,
                error=error,
                description=description,
                health_request=health_request,
                resumable=resumable,
                max_concurrency=max_concurrency,
            )
            return fn

        return decorate

    def register(
        self,
        name: str,
        engine: Any,
        *,
        request: type[Message] | None = None,
        response: type[Message] | None = None,
        error: type[Message] | None = None,
        description: str | None = None,
        health_request: Message | None = None,
        resumable: bool | None = None,
        max_concurrency: int | None = None,
    ) -> LocalEngine:
        """Register ``engine`` under ``name`` and return it type-erased.

        ``engine`` is an async generator function ``(request, ctx)``, a coroutine function returning one
        response, an object whose ``generate`` is either, or a typed :class:`Engine` (a remote one, say),
        whose types, description and ``resumable`` (see :meth:`engine`; else False) are then the defaults.

        ``max_concurrency`` is how many generations of this engine a server runs at once (calls beyond it wait
        in the engine's queue, up to ``--max-queue``); it wins over ``--max-engine-concurrency`` for this engine.
        0 means no limit; None (the default) leaves it to ``--max-engine-concurrency``.

        Example::

            registry.register("count", CountEngine(), request=CountRequest, response=CountResponse)
        """
        if not name or not name.isprintable():
            raise ValueError(f"engine name {name!r} must be a non-empty printable string")
        if name in self._engines:
            raise ValueError(f"an engine named {name!r} is already registered")
        if isinstance(engine, Engine):
            request = request or engine.request_class
            response = response or engine.response_class
        description, resumable = _inherited(engine, description, resumable)
        if request is None or response is None:
            raise TypeError(f"engine {name!r} needs its request= and response= message classes")
        for role, cls in (("request", request), ("response", response), ("error", error)):
            if cls is not None and not (isinstance(cls, type) and issubclass(cls, Message)):
                raise TypeError(f"engine {name!r}: {role}= must be a protobuf message class, got {cls!r}")
        if health_request is not None and not isinstance(health_request, request):
            raise TypeError(f"engine {name!r}: health_request must be a {request.DESCRIPTOR.full_name}")
        fn, unary = as_generator(engine, name)
        if description is None:
            doc = inspect.getdoc(getattr(engine, "generate", None) or engine) or inspect.getdoc(engine) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        local = LocalEngine(
            name,
            fn,
            request=request,
            response=response,
            error=error,
            unary=unary,
            description=description,
            health_request=health_request,
            resumable=bool(resumable),
            max_concurrency=max_concurrency,
        )
        self._engines[name] = local
        return local

    def get(self, name: str) -> LocalEngine:
        """The engine under ``name``; raises :class:`EngineNotFound` (a ``KeyError``) naming those served."""
        try:
            return self._engines[name]
        except KeyError:
            served = ", ".join(sorted(self._engines)) or "none"
            raise EngineNotFound(f"no engine named {shorten(name)!r}; engines served: {served}") from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._engines)

    def add(self, engine: LocalEngine) -> None:
        """Add an engine registered elsewhere, under its own name (which must not clash)."""
        if engine.name in self._engines:
            raise ValueError(f"an engine named {engine.name!r} is already registered")
        self._engines[engine.name] = engine

    def merge(self, other: EngineRegistry) -> None:
        """Add every engine of ``other`` (names must not clash)."""
        for engine in other:
            self.add(engine)

    def __contains__(self, name: object) -> bool:
        return name in self._engines

    def __iter__(self) -> Iterator[LocalEngine]:
        return iter(self._engines.values())

    def __len__(self) -> int:
        return len(self._engines)


def _inherited(engine: Any, description: str | None, resumable: bool | None) -> tuple[str | None, bool | None]:
    """The description and ``resumable`` of an engine registered from another engine, unless given."""
    if isinstance(engine, AnyEngine | Engine):
        erased = engine.erased if isinstance(engine, Engine) else engine
        description = description if description is not None else erased.description
        resumable = erased.resumable if resumable is None else resumable
    return description, resumable
