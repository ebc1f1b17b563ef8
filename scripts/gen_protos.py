"""Compile protos/ into the importable package `generated/` (make proto), or check it for drift (--check).

protoc runs with protos/ as the include root, so descriptors are named `engine/v1/engine.proto` whoever compiles
them. grpcio-tools then writes imports such as `from engine.v1 import engine_pb2`; inside the package
`engine_runtime.generated` they must read `from engine_runtime.generated.engine.v1 import ...`, which this script
rewrites.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "generated"
IMPORT = re.compile(r"^(from|import) ((?:engine|examples)\.)", re.MULTILINE)
HEADER = '"""Generated from protos/ by `make proto`; do not edit."""\n'


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    # mypy-protobuf's plugin types the *_pb2_grpc modules, for which grpcio-tools writes no stubs.
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        fixed = IMPORT.sub(r"\1 engine_runtime.generated.\2", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        if folder.name != "__pycache__":
            (folder / "__init__.py").write_text(HEADER)
    (out / "py.typed").write_text("")


def compare(a: Path, b: Path) -> list[str]:
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    left, right = files(a), files(b)
    drift = sorted(left ^ right)
    drift += [f for f in sorted(left & right) if not filecmp.cmp(a / f, b / f, shallow=False)]
    return drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated/ differs from protos/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "generated"
        generate(fresh)
        if args.check:
            drift = compare(fresh, GENERATED) if GENERATED.exists() else ["generated/ is missing"]
            if drift:
                sys.exit("generated/ has drifted from protos/ (run `make proto`): " + ", ".join(drift))
            print("generated/ matches protos/")
            return
        if GENERATED.exists():
            shutil.rmtree(GENERATED)
        shutil.copytree(fresh, GENERATED)
        os.utime(GENERATED)


if __name__ == "__main__":
    main()
