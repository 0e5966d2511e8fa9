"""store/bulk.py: plain inserts of many rows go as one binary COPY on PostgreSQL, as executemany on SQLite.

Whatever the path, the rows read back as SQLAlchemy's own INSERT would have
written them (Python defaults filled, JSON encoded, NULLs kept), a unique
violation is the IntegrityError that `retry_on_conflict` acts on, and a
connection lost mid-COPY is the fault the API answers UNAVAILABLE for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from convhub.server.store.bulk import BulkInsert
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database, new_id, now_us
from convhub.server.store.faults import DatabaseUnavailable, classify
from convhub.server.store.models import Contact, IdempotencyKey, table
from tests.conftest import BACKENDS, migrated_databases

contacts = table(Contact)
keys = table(IdempotencyKey)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from migrated_databases(request.param, tmp_path)


def _contact(customer_id: str, **values: object) -> dict[str, object]:
    now = now_us()
    return {"id": new_id(), "customer_id": customer_id, "tm_create": now, "tm_update": now, **values}


def _statements(conn: Connection) -> list[str]:
    """The verb of every statement SQLAlchemy runs on `conn` from now on (a COPY runs beside it)."""
    seen: list[str] = []
    event.listen(conn, "before_cursor_execute", lambda *args: seen.append(args[2].split()[0].upper()))
    return seen


def test_rows_read_back_as_an_insert_writes_them(db: Database) -> None:
    customer_id = create_customer(db.writer, "bulk")
    # Rows that leave out `name` and `opted_out_channels`: their Python defaults ("" and a JSON []) apply.
    copied = [_contact(customer_id) for _ in range(5)]
    given = [_contact(customer_id, name=f"n{i}", opted_out_channels=["sms", "line"]) for i in range(5)]
    with db.writer.begin() as conn:
        seen = _statements(conn)
        BulkInsert(contacts)(conn, copied)
        BulkInsert(contacts)(conn, given)
    # On PostgreSQL neither went through SQLAlchemy's INSERT (they were COPYs); on SQLite both did.
    assert seen == ([] if db.backend == "postgresql" else ["INSERT", "INSERT"])
    with db.read() as conn:
        rows = {r.id: r for r in conn.execute(select(contacts).where(contacts.c.customer_id == customer_id))}
    assert {i: (rows[i].name, rows[i].opted_out_channels) for i in (r["id"] for r in copied)} == {
        r["id"]: ("", []) for r in copied
    }
    assert [(rows[r["id"]].name, rows[r["id"]].opted_out_channels) for r in given] == [
        (f"n{i}", ["sms", "line"]) for i in range(5)
    ]


def test_one_row_goes_as_a_plain_insert(db: Database) -> None:
    customer_id = create_customer(db.writer, "bulk")
    with db.writer.begin() as conn:
        seen = _statements(conn)
        BulkInsert(contacts)(conn, [_contact(customer_id)])
    assert seen == ["INSERT"]  # COPY's extra round trip costs more than it saves on one row


def test_a_unique_violation_is_an_integrity_error_and_nothing_is_written(db: Database) -> None:
    customer_id = create_customer(db.writer, "bulk")
    row = {"customer_id": customer_id, "method": "M", "request_id": "r1", "resource_id": new_id(), "tm_create": 1}
    with db.writer.begin() as conn:
        conn.execute(insert(keys), row)
    fresh = {**row, "request_id": "r2"}
    with pytest.raises(IntegrityError), db.writer.begin() as conn:
        BulkInsert(keys)(conn, [fresh, row])  # r1 is taken: the whole statement fails, r2 too
    with db.read() as conn:
        stored = conn.execute(select(keys.c.request_id).where(keys.c.customer_id == customer_id)).scalars().all()
    assert stored == ["r1"]


def test_tuples_in_column_order(db: Database) -> None:
    customer_id = create_customer(db.writer, "bulk")
    ids = [new_id() for _ in range(3)]
    with db.writer.begin() as conn:
        BulkInsert(contacts).tuples(
            conn,
            ("id", "customer_id", "name", "opted_out_channels", "tm_create", "tm_update"),
            [(i, customer_id, f"t{n}", "[]", n, n) for n, i in enumerate(ids)],
        )
    with db.read() as conn:
        got = conn.execute(select(contacts.c.id, contacts.c.name).where(contacts.c.customer_id == customer_id)).all()
    assert sorted(got) == sorted((i, f"t{n}") for n, i in enumerate(ids))


def test_a_connection_lost_mid_copy_is_unavailable(tmp_path: Path) -> None:
    """PostgreSQL only: the backend is terminated between BEGIN and the COPY."""
    for database in migrated_databases("postgresql", tmp_path):
        customer_id = create_customer(database.writer, "bulk")
        with pytest.raises(DBAPIError) as caught, database.writer.begin() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with database.reader.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            BulkInsert(contacts)(conn, [_contact(customer_id) for _ in range(3)])
        assert caught.value.connection_invalidated
        assert isinstance(classify(caught.value), DatabaseUnavailable)
        with database.writer.begin() as conn:  # the pool let go of the dead connection
            assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_an_unknown_column_type_is_refused_when_planned() -> None:
    from sqlalchemy import Column, MetaData, Table
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.types import Interval

    odd = Table("odd", MetaData(), Column("id", Interval))
    with pytest.raises(TypeError, match=r"odd\.id: no COPY type for INTERVAL"):
        BulkInsert(odd)._plan(("id",), postgresql.dialect())


def test_a_copy_is_traced_like_a_statement(db: Database) -> None:
    """With tracing on, the COPY that SQLAlchemy's hooks never see still gets its CLIENT span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from convhub.server.observability.tracing import StatementSpans

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    StatementSpans(provider, db.writer)
    customer_id = create_customer(db.writer, "bulk")
    exporter.clear()
    with db.writer.begin() as conn:
        BulkInsert(contacts)(conn, [_contact(customer_id) for _ in range(3)])
    copy = db.backend == "postgresql"
    queries = [(s.name, s.attributes["db.query.text"]) for s in exporter.get_finished_spans()]
    expected = ("COPY", "COPY contacts (") if copy else ("INSERT", "INSERT INTO contacts (")
    assert [(name, query[: len(expected[1])]) for name, query in queries if name == expected[0]] == [expected]
