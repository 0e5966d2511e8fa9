"""Reading a provider's JSON hook body: each accessor names the exact path of what is missing or wrong.

A malformed payload answers 400 with the field named (`data.payload.from.phone_number`,
`events[2].message.id`) and nothing stored: adapters read the whole body through
these before they ingest anything.
"""

from __future__ import annotations

import json
from typing import Any

from convhub.server.channels.hooks import malformed

MAX_FIELD = 4096  # ids, numbers, names: far above any provider's, far below a row's limits


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise malformed("body", "is not valid JSON") from None
    except RecursionError:  # nested deeper than the parser goes: no provider sends that
        raise malformed("body", "is nested too deeply") from None
    if not isinstance(value, dict):
        raise malformed("body", "must be a JSON object")
    return value


def child(parent: dict[str, Any], key: str, path: str, *, required: bool = True) -> dict[str, Any]:
    """The object at `parent[key]`; {} when absent and not required."""
    value = parent.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise malformed(path, "must be an object" if value is not None else "is required")
    return value


def items(parent: dict[str, Any], key: str, path: str, *, required: bool = True) -> list[Any]:
    """The list at `parent[key]`; [] when absent (or null) and not required."""
    value = parent.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise malformed(path, "must be a list" if value is not None else "is required")
    return value


def element(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise malformed(path, "must be an object")
    return value


def string(parent: dict[str, Any], key: str, path: str, *, required: bool = True, max_length: int = MAX_FIELD) -> str:
    """The string at `parent[key]`; "" when absent (or null) and not required. Never empty when required."""
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise malformed(path, "is required")
        return ""
    if not isinstance(value, str):
        raise malformed(path, "must be a string")
    if len(value) > max_length:
        raise malformed(path, f"longer than {max_length} characters")
    if "\x00" in value:
        raise malformed(path, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style escape
        raise malformed(path, "must be valid Unicode") from None
    return value


def number(parent: dict[str, Any], key: str, path: str, *, required: bool = True) -> float | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise malformed(path, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or abs(value) == float("inf"):
        raise malformed(path, "must be a finite number")
    return float(value)


def flag(parent: dict[str, Any], key: str, path: str) -> bool:
    value = parent.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise malformed(path, "must be true or false")
    return value
