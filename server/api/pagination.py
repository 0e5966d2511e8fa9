"""Keyset pagination (AIP-158): stable (tm_create, id) order and opaque page tokens.

A token encodes the last item's sort key and which list it belongs to, so a
page never skips or repeats an item while new rows are appended, and a token
from one list is refused by another.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, and_, or_

from convhub.server.api.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Page:
    size: int
    after: tuple[int, str] | None
    scope: str


def parse(page_size: int, page_token: str, scope: str) -> Page:
    """Validate page_size/page_token; `scope` names the list (e.g. `messages:<conversation id>`)."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return Page(size, None, scope)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        token_scope, tm, item_id = json.loads(base64.urlsafe_b64decode(padded))
        if token_scope != scope or not isinstance(tm, int) or not isinstance(item_id, str):
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidArgument("page_token", "invalid or from another list") from None
    return Page(size, (tm, item_id), scope)


def apply(query: Select[Any], table: Table, page: Page) -> Select[Any]:
    """Order by (tm_create, id), start after the token's key, fetch one extra row to detect a next page."""
    if page.after is not None:
        tm, item_id = page.after
        query = query.where(
            or_(table.c.tm_create > tm, and_(table.c.tm_create == tm, table.c.id > item_id)),
        )
    return query.order_by(table.c.tm_create, table.c.id).limit(page.size + 1)


def finish(rows: list[Any], page: Page) -> tuple[list[Any], str]:
    """This page's rows and the next page token ('' on the last page)."""
    if len(rows) <= page.size:
        return rows, ""
    rows = rows[: page.size]
    last = rows[-1]
    raw = json.dumps([page.scope, last.tm_create, last.id], separators=(",", ":")).encode()
    return rows, base64.urlsafe_b64encode(raw).decode().rstrip("=")
