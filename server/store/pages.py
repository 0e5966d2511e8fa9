"""Keyset pages (AIP-158): stable (tm_create, id) order and opaque page tokens.

A token encodes the last item's sort key and which list it belongs to, so a
page never skips or repeats an item while new rows are appended, and a token
from one list is refused by another (`decode_page_token` raises ValueError;
the API names the field).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, or_, select
from sqlalchemy.sql.elements import ColumnElement

from convhub.server.domain.page_times import time_token
from convhub.server.store.rows import plain_rows


@dataclass(frozen=True)
class Page:
    size: int
    after: tuple[int, str] | None
    scope: str  # which list: e.g. `messages:<conversation id>`
    # VoIPBIN's timestamp token: items created before this time (µs), newest first (domain/page_times.py).
    before: int | None = None


def encode_token(scope: str, *key: int | str) -> str:
    """An opaque token: the list it belongs to and the sort key of the last item returned."""
    raw = json.dumps([scope, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, scope: str) -> list[Any]:
    """The sort key in a token `encode_token` made for `scope`; ValueError if malformed or from another list."""
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        raise ValueError("invalid page token") from None
    if not isinstance(decoded, list) or not decoded or decoded[0] != scope:
        raise ValueError("page token from another list")
    return decoded[1:]


def encode_page_token(scope: str, tm_create: int, item_id: str) -> str:
    return encode_token(scope, tm_create, item_id)


def decode_page_token(token: str, scope: str) -> tuple[int, str]:
    """The (tm_create, id) a token continues after; ValueError if it is malformed or from another list."""
    key = decode_token(token, scope)
    if len(key) != 2 or not isinstance(key[0], int) or not isinstance(key[1], str):
        raise ValueError("page token from another list")
    return key[0], key[1]


class Lister:
    """The live rows of one customer in `table` filtered by equality on `columns`, one page at a time.

    Both statements (first page, and after a key) are built once; each fetch
    asks for one extra row to learn whether a next page exists.
    """

    def __init__(self, table: Table, columns: Sequence[str] = (), *, live_only: bool = True) -> None:
        self._table = table
        base = select(table).where(table.c.customer_id == bindparam("customer_id"))
        if live_only:  # tables without soft delete (webhook deliveries) pass False
            base = base.where(table.c.tm_delete.is_(None))
        for column in columns:
            base = base.where(table.c[column] == bindparam(column))
        after = or_(
            table.c.tm_create > bindparam("after_tm"),
            and_(table.c.tm_create == bindparam("after_tm"), table.c.id > bindparam("after_id")),
        )
        order = (table.c.tm_create, table.c.id)
        self._first = base.order_by(*order).limit(bindparam("limit"))
        self._next = base.where(after).order_by(*order).limit(bindparam("limit"))
        newest_first = (table.c.tm_create.desc(), table.c.id.desc())
        self._before = base.where(table.c.tm_create < bindparam("before")).order_by(*newest_first)
        self._before = self._before.limit(bindparam("limit"))

    def fetch(self, conn: Connection, page: Page, customer_id: str, **filters: str) -> tuple[list[Any], str]:
        """This page's rows and the next page token ('' on the last page)."""
        params: dict[str, Any] = {"customer_id": customer_id, "limit": page.size + 1, **filters}
        if page.before is not None:
            rows = conn.execute(self._before, {**params, "before": page.before}).all()
        elif page.after is None:
            rows = conn.execute(self._first, params).all()
        else:
            params["after_tm"], params["after_id"] = page.after
            rows = conn.execute(self._next, params).all()
        return page_of(plain_rows(self._table, rows), page)


def after_key(table: Table, after: tuple[int, str]) -> ColumnElement[bool]:
    """Rows past `after` in (tm_create, id) order."""
    tm, item_id = after
    return or_(table.c.tm_create > tm, and_(table.c.tm_create == tm, table.c.id > item_id))


def page_of(rows: Sequence[Any], page: Page) -> tuple[list[Any], str]:
    """`rows` fetched with one extra (size + 1) cut to the page, and the next page token ('' on the last page)."""
    if len(rows) <= page.size:
        return list(rows), ""
    kept = list(rows[: page.size])
    last = kept[-1]
    if page.before is not None:  # a VoIPBIN client continues with a token of its own kind
        return kept, time_token(last.tm_create)
    return kept, encode_page_token(page.scope, last.tm_create, last.id)


def before_key(table: Table, before: int) -> ColumnElement[bool]:
    """Rows created before `before` (µs): a VoIPBIN timestamp page."""
    return table.c.tm_create < before
