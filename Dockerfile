# syntax=docker/dockerfile:1
# engine-server in a container; see docs/deployment.md.
#   docker build -t engine-runtime:0.1.0 .
#   docker run --rm -p 50051:50051 engine-runtime:0.1.0                   # the example engines
#   docker run --rm -p 50051:50051 engine-runtime:0.1.0 --log-format json  # arguments go to engine-server

FROM python:3.11-slim AS builder

WORKDIR /src
# Only what the wheel is built from, so that editing tests or docs does not rebuild this stage.
COPY pyproject.toml README.md ./
# engine_runtime/ holds the import root: its server, client and generated are links to the folders beside it.
COPY engine_runtime/ engine_runtime/
COPY server/ server/
COPY client/ client/
COPY generated/ generated/

# The extras installed with the wheel: `otel` (OpenTelemetry tracing, off until OTEL_TRACES_EXPORTER is set) by
# default; `docker build --build-arg EXTRAS= .` builds an image without it.
ARG EXTRAS=otel

# A wheel, then a venv installed from it: the runtime stage copies the venv alone, without the sources, the build
# tree or pip's build dependencies. The venv gets no pip of its own; nothing installs packages at run time.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && wheel="$(echo /wheels/*.whl)" \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}"


FROM python:3.11-slim AS runtime

# A numeric user: Kubernetes' runAsNonRoot can only verify a numeric USER. The sidecar manifest runs its
# application container under the same UID, which the owner-only unix socket requires.
RUN groupadd --system --gid 10001 engine \
    && useradd --system --uid 10001 --gid engine --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin engine

COPY --from=builder /opt/venv /opt/venv

# PYTHONSAFEPATH keeps `python -m engine_runtime.server.healthcheck` from importing a module of the working directory.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1

# engine-server binds 127.0.0.1 by default, and inside a container that loopback is the container's own: neither
# a published port (docker run -p) nor a Kubernetes Service could reach the server. The image opts in to all
# interfaces explicitly, through the environment rather than CMD, because arguments given to `docker run IMAGE ...`
# or a Kubernetes `args:` replace CMD and would silently bring back the unreachable default. To narrow it again:
# `-e ENGINE_SERVER_HOST=127.0.0.1` or `--host 127.0.0.1` (the command line wins over the environment).
ENV ENGINE_SERVER_HOST=0.0.0.0

USER 10001:10001
EXPOSE 50051

# Asks grpc.health.v1 on the default port. A server started with another --port, or on a unix socket alone,
# needs its own health command (docker run --health-cmd ...); Kubernetes uses its own probes instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "engine_runtime.server.healthcheck", "--timeout", "3"]

# SIGTERM (docker stop) starts the drain: give it --drain-timeout + --stop-timeout, e.g. `docker stop -t 45`.
ENTRYPOINT ["engine-server"]
