"""Regenerate every generated client from proto/ - the one generate command.

Runs `buf generate` with buf.gen.yaml: Python stubs into `gen/convhub/v1/`
(`*_pb2.py`, `*_pb2_grpc.py` and their mypy-protobuf `.pyi` types) and the
TypeScript client's messages and service descriptors into
`client/typescript/src/gen/` (protoc-gen-es). The plugins come from the dev
extra (buf, grpcio-tools, mypy-protobuf: run it with the venv's python) and
from client/typescript's locked devDependencies (`npm ci` runs first when
they are missing). Generated files are never edited by hand; CI reruns this
and fails on a diff.

    python proto/generate.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY_PACKAGE = ROOT / "gen" / "convhub" / "v1"
TS_PACKAGE = ROOT / "client" / "typescript"
TS_GEN = TS_PACKAGE / "src" / "gen"
PY_PACKAGE_DOC = '"""Generated from proto/convhub/v1 by proto/generate.py; do not edit."""\n'
TS_PLUGIN = TS_PACKAGE / "node_modules" / ".bin" / "protoc-gen-es"


def main() -> int:
    if not TS_PLUGIN.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_PACKAGE, check=True)
    for generated in (PY_PACKAGE, TS_GEN):
        if generated.exists():
            shutil.rmtree(generated)
    # The venv's bin first: buf, python-grpc-tools-protoc, protoc-gen-mypy*, and this python.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    rc = subprocess.run(["buf", "generate"], cwd=ROOT, env=env).returncode
    if rc != 0:
        return rc
    (PY_PACKAGE / "__init__.py").write_text(PY_PACKAGE_DOC)
    (PY_PACKAGE / "py.typed").write_text("")
    return 0


if __name__ == "__main__":
    sys.exit(main())
