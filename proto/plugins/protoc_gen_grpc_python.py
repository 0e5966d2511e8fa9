#!/usr/bin/env python
"""`protoc-gen-grpc_python` for buf: grpcio-tools' gRPC generator behind the plugin protocol.

grpcio-tools builds its gRPC Python generator into its own protoc
(`--grpc_python_out`) and ships no plugin binary, and buf only runs protoc's
own built-ins (`protoc_builtin: python`) that way. This reads buf's
CodeGeneratorRequest, hands the same descriptors to grpcio-tools' protoc
(`--descriptor_set_in`), and returns what it wrote, so the output is exactly
grpcio-tools' (pinned in the dev extra).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = Path(tmp) / "request.binpb"
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = Path(tmp) / "out"
        out.mkdir()
        opt = f"{request.parameter}:" if request.parameter else ""
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"--descriptor_set_in={descriptors}",
                f"--grpc_python_out={opt}{out}",
                *request.file_to_generate,
            ]
        )
        if rc != 0:
            response.error = f"grpc_tools.protoc exited {rc}"
            return response
        for path in sorted(out.rglob("*")):
            if path.is_file():
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    return response


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
