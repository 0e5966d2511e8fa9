"""Migration 0008 turns existing participants into people: those sharing an address become one contact."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from convhub.server.store.db import alembic_config, create_db_engine, new_id, upgrade_schema
from tests.conftest import BACKENDS, create_database

CUSTOMER = "00000000-0000-4000-8000-0000000000c1"
OTHER_CUSTOMER = "00000000-0000-4000-8000-0000000000c2"


def pid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


# (participant, customer, created, name, addresses): p1 and p3 share a phone, p3 and p4 share an email,
# so p1, p3, p4 are one person (p1 the earliest); p2 is alone; p5 has p1's phone at another customer.
PARTICIPANTS = [
    (pid(3), CUSTOMER, 30, "Ann (email)", [("tel", "+15550000001"), ("email", "ann@example.com")]),
    (pid(1), CUSTOMER, 10, "Ann", [("tel", "+15550000001")]),
    (pid(2), CUSTOMER, 20, "Bob", [("tel", "+15550000002")]),
    (pid(4), CUSTOMER, 40, "", [("email", "ann@example.com"), ("line", "Uann")]),
    (pid(5), OTHER_CUSTOMER, 5, "Other Ann", [("tel", "+15550000001")]),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_participants_sharing_an_address_merge_into_one_contact_deterministically(backend: str, tmp_path: Path) -> None:
    for url in create_database(backend, tmp_path):
        engine = create_db_engine(url, pool_size=1)
        try:
            command.upgrade(alembic_config(engine), "0007")
            with engine.begin() as conn:
                for customer in (CUSTOMER, OTHER_CUSTOMER):
                    conn.execute(
                        text(
                            "INSERT INTO customers (id, name, event_seq, tm_create, tm_update)"
                            " VALUES (:id, 'c', 0, 0, 0)"
                        ),
                        {"id": customer},
                    )
                    conn.execute(
                        text(
                            "INSERT INTO conversations (id, customer_id, name, detail, type, self_type,"
                            " self_target, self_name, peer_type, peer_target, peer_name, owner_type, owner_id,"
                            " metadata, tags, state, tm_create, tm_update) VALUES (:id, :c, '', '', 'message',"
                            " 'tel', '+15559990000', '', 'tel', :id, '', '', '', '{}', '[]', 'closed', 0, 0)"
                        ),
                        {"id": customer, "c": customer},
                    )
                for participant_id, customer, created, name, addresses in PARTICIPANTS:
                    conn.execute(
                        text(
                            "INSERT INTO participants (id, customer_id, conversation_id, name, preferred_channel,"
                            " last_active_channel, tm_create, tm_update) VALUES (:id, :c, :c, :n, '', '', :t, :t)"
                        ),
                        {"id": participant_id, "c": customer, "n": name, "t": created},
                    )
                    for position, (type_, target) in enumerate(addresses):
                        conn.execute(
                            text(
                                "INSERT INTO participant_addresses (id, participant_id, customer_id, position, type,"
                                " target, target_name) VALUES (:id, :p, :c, :pos, :type, :target, '')"
                            ),
                            {
                                "id": new_id(),
                                "p": participant_id,
                                "c": customer,
                                "pos": position,
                                "type": type_,
                                "target": target,
                            },
                        )
            upgrade_schema(engine)
            with engine.connect() as conn:
                links = dict(conn.execute(text("SELECT id, contact_id FROM participants")).all())
                contacts = {r.id: (r.customer_id, r.name) for r in conn.execute(text("SELECT * FROM contacts")).all()}
                held = conn.execute(
                    text(
                        "SELECT contact_id, customer_id, type, target FROM contact_addresses"
                        " ORDER BY contact_id, position"
                    )
                ).all()
        finally:
            engine.dispose()
        assert links == {pid(1): pid(1), pid(3): pid(1), pid(4): pid(1), pid(2): pid(2), pid(5): pid(5)}
        assert contacts == {pid(1): (CUSTOMER, "Ann"), pid(2): (CUSTOMER, "Bob"), pid(5): (OTHER_CUSTOMER, "Other Ann")}
        assert [tuple(r) for r in held] == [
            (pid(1), CUSTOMER, "tel", "+15550000001"),
            (pid(1), CUSTOMER, "email", "ann@example.com"),
            (pid(1), CUSTOMER, "line", "Uann"),
            (pid(2), CUSTOMER, "tel", "+15550000002"),
            (pid(5), OTHER_CUSTOMER, "tel", "+15550000001"),
        ]
