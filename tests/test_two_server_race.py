"""Two `convhub serve` processes on one PostgreSQL database race to open the same rooms (invariants 2 and 3).

Within one process the SQLite writer and the group commit serialise
ingests, so only separate processes exercise what the unique indexes and
`match_rooms`' "join the concurrent opener's room" branch guard: here the
same new peers and the same provider message ids arrive at both servers at
once, from threads driving both. Afterwards each peer has exactly one open
room and each provider id exactly one message, and every answer agrees.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, func, select

from convhub.server.events.outbox import EVENT_TYPE_NAMES
from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine
from convhub.server.store.models import Conversation, Event, Message, Participant
from convhub.v1 import common_pb2, event_pb2
from convhub.v1 import ingest_service_pb2 as ip
from convhub.v1 import ingest_service_pb2_grpc as ig
from tests.conftest import create_database, start_server, stop_server
from tests.support import SMS, TEL

PEERS = 60  # new peers, each opened by whichever server wins
PROVIDER_IDS_PER_PEER = 3  # messages per peer, each sent to both servers
REPEATS = 2  # each server also gets each message twice (a provider retrying)
THREADS_PER_SERVER = 8
OURS = "+15559990000"


@dataclass
class Servers:
    engine: Engine
    targets: list[str]


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[Servers]:
    for url in create_database("postgresql", tmp_path):
        engine = create_db_engine(url, pool_size=2)
        procs = []
        try:
            targets = []
            for n in range(2):  # one after the other: the first start runs the migrations
                proc, target, _http, _lines = start_server(url, data_dir=tmp_path / f"server{n}", http=False)
                procs.append(proc)
                targets.append(target)
            yield Servers(engine, targets)
        finally:
            for proc in procs:
                assert stop_server(proc) == 0
            engine.dispose()


@dataclass(frozen=True)
class Answer:
    server: int
    peer: str
    provider_id: str
    message_id: str
    conversation_id: str
    created: bool


def peer_number(n: int) -> str:
    return f"+1555030{n:04d}"


def drive_both(servers: Servers, token: str) -> tuple[list[Answer], list[str]]:
    """Send every (peer, provider id) to both servers, REPEATS times each, from threads started together."""
    work = [(peer_number(p), f"SM{p:04d}x{k}") for p in range(PEERS) for k in range(PROVIDER_IDS_PER_PEER)] * REPEATS
    answers: list[Answer] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2 * THREADS_PER_SERVER)
    metadata = (("authorization", f"Bearer {token}"),)

    def run(server: int, stub: ig.IngestServiceStub, items: list[tuple[str, str]]) -> None:
        start.wait(timeout=30)
        for peer, provider_id in items:
            request = ip.IngestMessageRequest(
                channel=SMS,
                self=common_pb2.Address(type=TEL, target=OURS),
                peer=common_pb2.Address(type=TEL, target=peer),
                text=f"message {provider_id}",
                transaction_id=provider_id,
            )
            try:
                response = stub.IngestMessage(request, metadata=metadata, timeout=60)
            except grpc.RpcError as err:
                with lock:
                    errors.append(f"server {server}: {err.code().name}: {err.details()}")  # type: ignore[attr-defined]
                continue
            answer = Answer(
                server,
                peer,
                provider_id,
                response.message.id,
                response.conversation.id,
                response.conversation_created,
            )
            with lock:
                answers.append(answer)

    channels = [grpc.insecure_channel(target) for target in servers.targets]
    threads = []
    for server, channel in enumerate(channels):
        stub = ig.IngestServiceStub(channel)
        order = random.Random(server).sample(work, len(work))  # each server sees the work in its own order
        for t in range(THREADS_PER_SERVER):
            threads.append(threading.Thread(target=run, args=(server, stub, order[t::THREADS_PER_SERVER])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for channel in channels:
        channel.close()
    assert not any(thread.is_alive() for thread in threads)
    return answers, errors


def test_two_servers_ingesting_the_same_new_peers_open_one_room_and_store_one_message_each(
    two_servers: Servers,
) -> None:
    engine = two_servers.engine
    customer_id = create_customer(engine, "race")
    answers, errors = drive_both(two_servers, create_token(engine, customer_id).token)

    assert errors == []
    assert len(answers) == 2 * REPEATS * PEERS * PROVIDER_IDS_PER_PEER

    # Every answer for a peer names the same room, and every answer for a provider id the same message.
    rooms_by_peer: defaultdict[str, set[str]] = defaultdict(set)
    messages_by_provider_id: defaultdict[str, set[str]] = defaultdict(set)
    for answer in answers:
        rooms_by_peer[answer.peer].add(answer.conversation_id)
        messages_by_provider_id[answer.provider_id].add(answer.message_id)
    assert {peer: len(rooms) for peer, rooms in rooms_by_peer.items() if len(rooms) != 1} == {}
    assert {pid: len(ids) for pid, ids in messages_by_provider_id.items() if len(ids) != 1} == {}
    # Exactly one answer per peer says it opened the room.
    assert Counter(a.peer for a in answers if a.created) == Counter({peer_number(p): 1 for p in range(PEERS)})

    conversations, messages, participants, events = (
        Conversation.__table__,
        Message.__table__,
        Participant.__table__,
        Event.__table__,
    )
    with engine.connect() as conn:
        open_rooms = dict(
            conn.execute(
                select(conversations.c.peer_target, func.count())
                .where(conversations.c.customer_id == customer_id, conversations.c.state == "open")
                .group_by(conversations.c.peer_target)
            ).all()
        )
        all_rooms = conn.execute(
            select(func.count()).select_from(conversations).where(conversations.c.customer_id == customer_id)
        ).scalar_one()
        stored = dict(
            conn.execute(
                select(messages.c.transaction_id, func.count())
                .where(messages.c.customer_id == customer_id)
                .group_by(messages.c.transaction_id)
            ).all()
        )
        people = conn.execute(
            select(func.count()).select_from(participants).where(participants.c.customer_id == customer_id)
        ).scalar_one()
        created_events = conn.execute(
            select(func.count())
            .select_from(events)
            .where(
                events.c.customer_id == customer_id,
                events.c.type == EVENT_TYPE_NAMES[event_pb2.EVENT_TYPE_CONVERSATION_CREATED],
            )
        ).scalar_one()
    assert open_rooms == {peer_number(p): 1 for p in range(PEERS)}
    assert all_rooms == PEERS
    assert stored == {pid: 1 for pid in messages_by_provider_id}
    assert len(stored) == PEERS * PROVIDER_IDS_PER_PEER
    assert people == PEERS  # a losing opener's peer participant was never written
    assert created_events == PEERS
    # The answers agree with what is stored.
    with engine.connect() as conn:
        stored_ids = set(
            conn.execute(select(messages.c.id).where(messages.c.customer_id == customer_id)).scalars().all()
        )
    assert stored_ids == {next(iter(ids)) for ids in messages_by_provider_id.values()}
