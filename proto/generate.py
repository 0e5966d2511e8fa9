"""Regenerate the Python stubs from proto/ - the one generate command.

Writes `gen/convhub/v1/*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` types
(mypy-protobuf), and copies the google/api protos that buf needs from the
installed googleapis-common-protos package into build/protodeps (no network).
Generated files are never edited by hand; CI reruns this and fails on a diff.

    python proto/generate.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import google.api.annotations_pb2
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "gen"
PROTODEPS = ROOT / "build" / "protodeps"
GOOGLE_API_PROTOS = ("annotations.proto", "http.proto", "field_behavior.proto", "field_info.proto")


def copy_google_api_protos() -> Path:
    """Copy google/api protos from googleapis-common-protos for buf."""
    src = Path(google.api.annotations_pb2.__file__).parent
    dest = PROTODEPS / "google" / "api"
    dest.mkdir(parents=True, exist_ok=True)
    for name in GOOGLE_API_PROTOS:
        shutil.copyfile(src / name, dest / name)
    return src.parent.parent  # the include root that holds google/api


def main() -> int:
    googleapis_root = copy_google_api_protos()
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    package_dir = OUT_DIR / "convhub" / "v1"
    if package_dir.exists():
        shutil.rmtree(package_dir)
    package_dir.mkdir(parents=True)
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "convhub").rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{googleapis_root}",
        f"-I{well_known}",
        f"--python_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        f"--mypy_out={OUT_DIR}",
        f"--mypy_grpc_out={OUT_DIR}",
        *sources,
    ]
    rc = protoc.main(args)
    if rc != 0:
        return rc
    (package_dir / "__init__.py").write_text(
        '"""Generated from proto/convhub/v1 by proto/generate.py; do not edit."""\n'
    )
    (package_dir / "py.typed").write_text("")
    return 0


if __name__ == "__main__":
    sys.exit(main())
