"""Proto -> command values: the parts of requests that services take as plain data.

The other direction (rows -> resource messages) is services/resources.py:
use cases return the contract's resources, converted once.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from convhub.server.domain.messages import Media
from convhub.v1 import common_pb2


def media_to_dict(m: common_pb2.Media) -> Media:
    return {"type": m.type, "url": m.url, "mime_type": m.mime_type, "filename": m.filename, "size": m.size}


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(s)
