"""``engine-client``: list, describe and call the engines of a server, with no local stubs.

Requests are JSON, encoded with the descriptors the server reports; responses print as JSON lines as they
arrive. Ctrl-C kills the generation (exit 130); ``--stop-after N`` asks for a graceful stop after N items;
``stop ID --key KEY`` stops a generation from another shell (``generate`` prints its id and key as it starts).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from engine_runtime.server.context import Context
from engine_runtime.server.errors import EngineError
from engine_runtime.server.tracing import TracingError

from .client import EngineClient
from .remote import RemoteEngine, RemoteStream

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _client(ctx: click.Context) -> EngineClient:
    o = ctx.find_root().obj
    try:
        return EngineClient(
            o["target"],
            tls_ca=o["tls_ca"],
            token_file=o["token_file"],
            timeout=o["timeout"],
            connect_timeout=o["connect_timeout"],
        )
    except (ValueError, OSError) as error:
        # A target list that names nothing, an unreadable TLS or token file: one line, not a traceback.
        raise click.ClickException(f"--target {o['target']!r}: {error}") from None
    except TracingError as error:
        raise click.ClickException(str(error)) from None


# The connection options, accepted before the subcommand (`engine-client --timeout 1 generate ...`) and after it
# (`engine-client generate ... --timeout 1`): written once, applied to the group and to every subcommand.
_CONNECTION: list[tuple[str, dict[str, Any]]] = [
    (
        "--target",
        {
            "help": "host:port, unix:PATH, dns:///host:port, ipv4:HOST:PORT,HOST:PORT, or a comma list. "
            "[default: 127.0.0.1:50051]"
        },
    ),
    ("--tls-ca", {"type": click.Path(dir_okay=False, exists=True), "help": "PEM CA bundle: connect with TLS."}),
    ("--token-file", {"type": click.Path(dir_okay=False, exists=True), "help": "File with the bearer token."}),
    ("--timeout", {"type": click.FloatRange(0, min_open=True), "help": "Deadline of each call, in seconds."}),
    ("--connect-timeout", {"type": click.FloatRange(0, min_open=True), "help": "Seconds to connect. [default: 10]"}),
]
_DEFAULTS: dict[str, Any] = {"target": "127.0.0.1:50051", "connect_timeout": 10.0}


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a connection option given anywhere on the line (the one after the subcommand wins)."""
    options = ctx.find_root().ensure_object(dict)
    if param.name is not None and (value is not None or param.name not in options):
        options[param.name] = value if value is not None else _DEFAULTS.get(param.name)


def connection_options(f: F) -> F:
    for name, settings in reversed(_CONNECTION):
        f = click.option(name, callback=_remember, expose_value=False, show_default=False, **settings)(f)
    return f


@click.group(context_settings={"auto_envvar_prefix": "ENGINE_CLIENT", "show_default": True})
@connection_options
def command() -> None:
    """Call the engines of an engine-server. Options may come before or after the subcommand."""


@command.command("list")
@connection_options
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """A table of the engines served."""

    async def run() -> None:
        async with _client(ctx) as client:
            infos = await client.describe()
        rows = [("NAME", "KIND", "REQUEST", "RESPONSE", "ERROR", "DESCRIPTION")]
        rows += [
            (
                i.name,
                "unary" if i.unary else "stream",
                i.request_type,
                i.response_type,
                i.error_type or "-",
                i.description,
            )
            for i in infos
        ]
        widths = [max(len(row[c]) for row in rows) for c in range(5)]
        for row in rows:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5])

    _run(run())


@command.command()
@click.argument("name")
@connection_options
@click.pass_context
def describe(ctx: click.Context, name: str) -> None:
    """An engine's types and their fields."""

    async def run() -> None:
        async with _client(ctx) as client:
            engine = await client.get(name)
        click.echo(f"{engine.name}: {engine.description}")
        click.echo(f"  kind: {'unary' if engine.unary else 'stream'}")
        for role, type_name in (
            ("request", engine.request_type),
            ("response", engine.response_type),
            ("error", engine.error_type),
        ):
            if not type_name:
                continue
            click.echo(f"  {role}: {type_name}")
            for field in engine.types.remote_descriptor(type_name).fields:
                click.echo(f"    {field.name} = {field.number}: {_field_type(field)}")

    _run(run())


@command.command()
@connection_options
@click.argument("name")
@click.argument("request_json", metavar="JSON", default="{}")
@click.option(
    "--stop-after",
    type=click.IntRange(1),
    help="Ask for a graceful stop after this many items. Items the engine produced before it saw the stop still "
    "arrive (a fast engine may have produced them all); the last line says how many came after the stop.",
)
@click.option("--request-id", help="Use this request id (printable ASCII, at most 128 characters).")
@click.option(
    "--priority",
    type=click.IntRange(-(2**31), 2**31 - 1),
    default=0,
    help="Where the call stands in a busy engine's queue: higher first, then oldest.",
)
@click.pass_context
def generate(
    ctx: click.Context, name: str, request_json: str, stop_after: int | None, request_id: str | None, priority: int
) -> None:
    """Run engine NAME with a JSON request; print each response as a JSON line as it arrives."""

    async def run() -> int:
        async with _client(ctx) as client:
            engine = (await client.get(name)).with_priority(priority)
            request = _parse_request(engine, request_json)
            context = Context(request_id)
            interrupted = False

            def on_interrupt() -> None:
                nonlocal interrupted
                interrupted = True
                context.kill()

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            stream = await engine.generate(request, context)
            if isinstance(stream, RemoteStream):
                # What another shell needs to stop this generation: engine-client stop ID --key KEY
                click.echo(f"started: request id {context.id}, {await _where(stream)}", err=True)
            count, migrations = 0, client.migrations
            async for item in stream:
                if client.migrations != migrations and isinstance(stream, RemoteStream):
                    # It continued on another replica: a new call, with a stop key of its own.
                    migrations = client.migrations
                    click.echo(
                        f"continued: request id {context.id} after {_items(count)}, {await _where(stream)}", err=True
                    )
                click.echo(
                    json_format.MessageToJson(
                        item, indent=None, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                    )
                )
                count += 1
                if count == stop_after:
                    context.stop_generating()
            loop.remove_signal_handler(signal.SIGINT)
            if interrupted:
                click.echo(f"interrupted: generation {context.id} killed after {_items(count)}", err=True)
                return EXIT_INTERRUPTED
            reason = stream.finish_reason
            finish = reason.name.lower() if reason is not None else "ended"
            late = (
                f", {count - stop_after} of them after the stop was asked" if stop_after and count > stop_after else ""
            )
            click.echo(f"{finish}: {_items(count)}{late} (request id {context.id})", err=True)
            return 0

    sys.exit(_run(run()))


async def _where(stream: RemoteStream) -> str:
    """``stop key KEY, served by ADDRESS``: what `engine-client stop` needs, and the replica serving the call."""
    served_by = await stream.served_by()
    return f"stop key {await stream.stop_key()}" + (f", served by {served_by}" if served_by else "")


@command.command()
@connection_options
@click.argument("request_id")
@click.option("--key", required=True, help="The generation's stop key (x-stop-key; `generate` prints it).")
@click.option("--kill", is_flag=True, help="Kill it instead of asking for a graceful stop.")
@click.pass_context
def stop(ctx: click.Context, request_id: str, key: str, kill: bool) -> None:
    """Stop (or kill) the generation REQUEST_ID on whichever replica of the target runs it."""

    async def run() -> None:
        async with _client(ctx) as client:
            await client.stop(request_id, key=key, kill=kill)
        click.echo(f"{'killed' if kill else 'stop asked'}: generation {request_id}", err=True)

    _run(run())


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _parse_request(engine: RemoteEngine, text: str) -> Any:
    cls = engine.types.message_class(engine.request_type)
    try:
        return json_format.Parse(text, cls())
    except json_format.ParseError as error:
        # protobuf names fields by their JSON (camelCase) names; `describe` and the .proto say delay_s, not delayS.
        message = str(error).replace("\n", " ")
        for field in cls.DESCRIPTOR.fields:
            if field.json_name != field.name:
                message = message.replace(f"'{field.json_name}'", f"'{field.name}'")
                message = message.replace(f".{field.json_name}", f".{field.name}")
                message = message.replace(f"{field.json_name} field", f"{field.name} field")
        raise click.ClickException(f"bad JSON for {engine.request_type} (engine {engine.name!r}): {message}") from None


def _field_type(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        kind = field.message_type.full_name
    elif field.enum_type is not None:
        kind = field.enum_type.full_name
    else:
        kind = _SCALARS.get(field.type, str(field.type))
    return f"repeated {kind}" if field.is_repeated else kind


_SCALARS = {
    value: name[len("TYPE_") :].lower()
    for name, value in vars(FieldDescriptor).items()
    if name.startswith("TYPE_") and isinstance(value, int)
}


def _run(main: Any) -> Any:
    try:
        return asyncio.run(main)
    except EngineError as error:
        click.echo(f"Error: {error.code.name}: {error.message}", err=True)
        if error.detail is not None:
            click.echo(f"detail: {json_format.MessageToJson(error.detail, indent=None)}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def main() -> None:
    command()
