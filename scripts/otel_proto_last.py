"""Put opentelemetry-proto's own files back after xds-protos, which ships old copies of the same modules.

xds-protos (the ORCA load-report stubs) includes ``opentelemetry/proto/*`` generated from an old
opentelemetry-proto; installed after the real package, it overwrites it and the OTLP exporter no longer imports
(``cannot import name 'InstrumentationScope'``). pip's install order between the two is not ours to choose, so
when both are installed this reinstalls opentelemetry-proto (same version, no dependencies) last. The two sets
of modules do not otherwise overlap: the ORCA stubs import nothing from ``opentelemetry``.

Usage: ``python scripts/otel_proto_last.py [TARGET_PYTHON]`` (default: this interpreter's environment).
"""

from __future__ import annotations

import subprocess
import sys

_VERSIONS = """
import importlib.metadata as m
for name in ("xds-protos", "opentelemetry-proto"):
    try:
        print(m.version(name))
    except m.PackageNotFoundError:
        print("")
"""


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    found = subprocess.run([target, "-c", _VERSIONS], capture_output=True, text=True, check=True).stdout
    xds, proto = found.split("\n")[:2]
    if not (xds and proto):
        return
    pip = [sys.executable, "-m", "pip", "--python", target, "install", "--quiet", "--no-cache-dir"]
    subprocess.run([*pip, "--no-deps", "--force-reinstall", f"opentelemetry-proto=={proto}"], check=True)


if __name__ == "__main__":
    main()
