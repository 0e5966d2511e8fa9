"""Hot statements spell the values of partial-index predicates literally, never as bound parameters.

A bound `state = ?` where a partial index says `state = 'open'` costs on both
databases: SQLite re-prepares the statement on every execution (the planner's
choice may depend on the bound value; person_rooms' 16-key statement went from
~0.1 to ~0.5 ms), and PostgreSQL's generic plans cannot use the index at all.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import ClauseElement, Index
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from convhub.server.store import contacts, delivery_jobs, webhooks
from convhub.server.store.models import Base


def _predicate_values() -> set[str]:
    """Every quoted value named in a partial index's WHERE, e.g. 'open', 'pending', 'queued'."""
    values: set[str] = set()
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            assert isinstance(index, Index)
            where = index.dialect_options["sqlite"].get("where")
            if where is not None:
                values.update(re.findall(r"'([^']*)'", str(where)))
    return values


BOTH = (sqlite.dialect(), postgresql.dialect())
# name -> (statement, the dialects it runs on)
HOT_STATEMENTS: dict[str, tuple[ClauseElement, tuple[Dialect, ...]]] = {
    "contacts.person_rooms (SQLite)": (contacts._person_rooms_sqlite(4), (sqlite.dialect(),)),
    "contacts.person_rooms (PostgreSQL)": (contacts._person_rooms_postgresql(), (postgresql.dialect(),)),
    "delivery_jobs.claim_due": (delivery_jobs._due, BOTH),
    "webhooks.claim": (webhooks._claim_due, BOTH),
    "webhooks.open chains": (webhooks._open_chains, BOTH),
}


def test_the_partial_indexes_name_values() -> None:
    assert {"open", "pending", "queued", "sending"} <= _predicate_values()


@pytest.mark.parametrize("name", sorted(HOT_STATEMENTS))
def test_no_partial_index_value_is_bound(name: str) -> None:
    statement, dialects = HOT_STATEMENTS[name]
    for dialect in dialects:
        compiled = statement.compile(dialect=dialect)
        bound = {key: value for key, value in compiled.params.items() if value in _predicate_values()}
        assert not bound, f"{name} on {dialect.name} binds {bound}: spell them literally (literal_column)"
