"""The migration that adds events.conversation_id fills it in for events written before it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

from convhub.server.store.db import alembic_config, create_db_engine, new_id, upgrade_schema
from convhub.v1 import account_pb2, conversation_pb2, event_pb2, message_pb2, participant_pb2


def test_events_written_before_the_column_existed_get_their_conversation(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}", pool_size=1)
    command.upgrade(alembic_config(engine), "0001")
    customer, room = new_id(), new_id()
    resources = [
        event_pb2.Event(conversation=conversation_pb2.Conversation(id=room)),
        event_pb2.Event(message=message_pb2.Message(id=new_id(), conversation_id=room)),
        event_pb2.Event(participant=participant_pb2.Participant(id=new_id(), conversation_id=room)),
        event_pb2.Event(account=account_pb2.Account(id=new_id())),
    ]
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO customers (id, name, event_seq, tm_create, tm_update) VALUES (:id, 'old', 4, 0, 0)"),
            {"id": customer},
        )
        for seq, event in enumerate(resources, start=1):
            conn.execute(
                text(
                    "INSERT INTO events (customer_id, sequence, id, type, resource_id, payload, tm_create)"
                    " VALUES (:c, :s, :id, 'x', :r, :p, 0)"
                ),
                {"c": customer, "s": seq, "id": new_id(), "r": new_id(), "p": event.SerializeToString()},
            )
    upgrade_schema(engine)
    with engine.connect() as conn:
        filed = conn.execute(text("SELECT conversation_id FROM events ORDER BY sequence")).scalars().all()
    engine.dispose()
    assert filed == [room, room, room, None]
