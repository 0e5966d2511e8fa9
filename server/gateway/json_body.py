"""REST request bodies: bytes -> JSON value, refusing what the rest of the shim should never see.

A body nested deeper than `MAX_DEPTH` levels of objects/arrays is refused
before it is decoded (one documented limit, below every decoder's: Python's
JSON parser, `json_format` and upb each stop somewhere else, and a stop in
the middle used to be a 500). `NaN`/`Infinity` literals are not JSON. Text
and number rules per field are the codec's (it knows the field paths).
"""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, count
from typing import Any

from convhub.server.api.request_rules import MAX_DEPTH
from convhub.server.errors import InvalidArgument

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# After deleting everything else: an opening bracket becomes 2 and a closing one 0, so the
# running sum minus the number of brackets seen is the nesting depth at each bracket.
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of JSON objects/arrays in `body` (brackets inside strings do not count)."""
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(map(operator.sub, accumulate(steps), count(1)), default=0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body (`{}` when empty); InvalidArgument on `body` when it is not one."""
    if not body.strip():
        return {}
    # Fewer brackets than the limit cannot nest past it: the exact scan runs only when it might.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and nesting_depth(body) > MAX_DEPTH:
        raise InvalidArgument("body", f"nested deeper than {MAX_DEPTH} levels of objects and arrays")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument("body", f"malformed JSON: {exc}") from None
