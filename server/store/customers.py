"""Customers (tenants) and their API tokens.

Tokens are 256-bit random strings shown once at creation; only their SHA-256
is stored (DESIGN.md invariant 5), so a database dump reveals no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, func, insert, select

from convhub.server.store.db import new_id, now_us
from convhub.server.store.models import ApiToken, Customer, table

TOKEN_PREFIX = "chk_"
_customers = table(Customer)
_tokens = table(ApiToken)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    customer_id: str
    token_id: str
    token: str


def create_customer(engine: Engine, name: str) -> str:
    now = now_us()
    customer_id = new_id()
    with engine.begin() as conn:
        conn.execute(insert(_customers).values(id=customer_id, name=name, event_seq=0, tm_create=now, tm_update=now))
    return customer_id


def create_token(engine: Engine, customer_id: str, name: str = "default") -> NewToken:
    """Issue a token; the plain text exists only in the return value."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = new_id()
    with engine.begin() as conn:
        exists = conn.execute(
            select(_customers.c.id).where(_customers.c.id == customer_id, _customers.c.tm_delete.is_(None))
        ).first()
        if exists is None:
            raise LookupError(f"customer {customer_id!r} not found")
        conn.execute(
            insert(_tokens).values(
                id=token_id, customer_id=customer_id, name=name, token_hash=hash_token(token), tm_create=now_us()
            )
        )
    return NewToken(customer_id, token_id, token)


_customer_for_token = (
    select(_tokens.c.customer_id)
    .join(_customers, _customers.c.id == _tokens.c.customer_id)
    .where(
        _tokens.c.token_hash == bindparam("token_hash"),
        _tokens.c.tm_delete.is_(None),
        _customers.c.tm_delete.is_(None),
    )
)


def customer_for_token(conn: Connection, token: str) -> str | None:
    """The customer a live token belongs to, or None."""
    return conn.execute(_customer_for_token, {"token_hash": hash_token(token)}).scalar()


def list_customers(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.id, r.name) for r in conn.execute(select(_customers).order_by(_customers.c.tm_create))]


def ensure_default_customer(engine: Engine) -> NewToken | None:
    """On an empty database, create a `default` customer and return its first token (to print once)."""
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(_customers)).scalar_one():
            return None
    return create_token(engine, create_customer(engine, "default"), "default")
