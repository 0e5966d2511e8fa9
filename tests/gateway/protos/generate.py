"""Regenerate the test-only gwtest stubs: `python tests/gateway/protos/generate.py`.

Same include paths as proto/generate.py (google/api from googleapis-common-protos,
well-known types from grpc_tools), so the stubs match the installed runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import google.api.annotations_pb2
import grpc_tools
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent


def main() -> int:
    googleapis_root = Path(google.api.annotations_pb2.__file__).parent.parent.parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "gwtest").rglob("*.proto"))
    return protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{googleapis_root}",
            f"-I{well_known}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            *sources,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
