"""Every contract file carries the per-language file options generators need (Go refuses to run without go_package).

buf lint (PACKAGE_SAME_*) keeps the values equal across the package; this
checks that they are there at all, including objc_class_prefix, which no
buf rule covers, for every .proto file in proto/convhub/v1.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PROTO_DIR = Path(__file__).resolve().parents[1] / "proto" / "convhub" / "v1"
EXPECTED = {
    "go_package": "github.com/convhub/convhub/gen/go/convhub/v1;convhubv1",
    "java_package": "dev.convhub.v1",
    "java_multiple_files": True,
    "csharp_namespace": "Convhub.V1",
    "php_namespace": "Convhub\\V1",
    "ruby_package": "Convhub::V1",
    "objc_class_prefix": "CVH",
}


@pytest.mark.parametrize("proto", sorted(p.stem for p in PROTO_DIR.glob("*.proto")))
def test_every_proto_file_has_the_language_options(proto: str) -> None:
    options = importlib.import_module(f"convhub.v1.{proto}_pb2").DESCRIPTOR.GetOptions()
    assert {name: getattr(options, name) for name in EXPECTED} == EXPECTED
