"""Keyset pagination (AIP-158): stable (tm_create, id) order and opaque page tokens.

A token encodes the last item's sort key and which list it belongs to, so a
page never skips or repeats an item while new rows are appended, and a token
from one list is refused by another.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, or_, select

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


class Lister:
    """The live rows of one customer in `table` filtered by equality on `columns`, one page at a time.

    Both statements (first page, and after a key) are built once; each fetch
    asks for one extra row to learn whether a next page exists.
    """

    def __init__(self, table: Table, columns: Sequence[str] = ()) -> None:
        base = select(table).where(table.c.customer_id == bindparam("customer_id"), table.c.tm_delete.is_(None))
        for column in columns:
            base = base.where(table.c[column] == bindparam(column))
        after = or_(
            table.c.tm_create > bindparam("after_tm"),
            and_(table.c.tm_create == bindparam("after_tm"), table.c.id > bindparam("after_id")),
        )
        order = (table.c.tm_create, table.c.id)
        self._first = base.order_by(*order).limit(bindparam("limit"))
        self._next = base.where(after).order_by(*order).limit(bindparam("limit"))

    def fetch(self, conn: Connection, page: Page, customer_id: str, **filters: str) -> tuple[list[Any], str]:
        """This page's rows and the next page token ('' on the last page)."""
        params: dict[str, Any] = {"customer_id": customer_id, "limit": page.size + 1, **filters}
        if page.after is None:
            rows = conn.execute(self._first, params).all()
        else:
            params["after_tm"], params["after_id"] = page.after
            rows = conn.execute(self._next, params).all()
        if len(rows) <= page.size:
            return list(rows), ""
        rows = rows[: page.size]
        last = rows[-1]
        raw = json.dumps([page.scope, last.tm_create, last.id], separators=(",", ":")).encode()
        return list(rows), base64.urlsafe_b64encode(raw).decode().rstrip("=")
