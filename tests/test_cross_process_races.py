"""Races between processes on one PostgreSQL database (invariants 2 and 3).

Within one process the SQLite writer and the group commit serialise
ingests, so only separate processes exercise what the unique indexes and
`match_rooms`' "join the concurrent opener's room" branch guard.

1. Two `convhub serve` processes get the same new peers and the same
   provider message ids at once, from threads driving both: afterwards each
   peer has exactly one open room and each provider id exactly one message,
   and every answer agrees.
2. A server's ingest loses the room race and then the provider-id race to
   transactions this test holds open in its own connections, step by step.
   Joining the winner's room costs nothing, so the one retry left answers
   the provider-id race with the first message; an opener that gave up its
   room race instead would spend that retry and fail.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text

from convhub.server.events.outbox import EVENT_TYPE_NAMES
from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine, new_id, now_us
from convhub.server.store.models import Conversation, Event, Message, Participant
from convhub.v1 import common_pb2, event_pb2
from convhub.v1 import ingest_service_pb2 as ip
from convhub.v1 import ingest_service_pb2_grpc as ig
from tests.conftest import Hub, Tenant, create_database, start_server, stop_server
from tests.support import SMS, TEL

PEERS = 60  # new peers, each opened by whichever server wins
PEERS_PER_ROUND = 4  # both servers start on the same few new peers at once, round after round
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


def round_of_work(server: int, first_peer: int) -> list[tuple[str, str]]:
    """One server's (peer, provider id) calls for a round. Each server starts each peer on a different
    provider id, so the two rooms being opened at once hold different messages: only the room index,
    not the provider-id index, can keep them one."""
    k = PROVIDER_IDS_PER_PEER
    return [
        (peer_number(p), f"SM{p:04d}x{(n + server) % k}")
        for p in range(first_peer, first_peer + PEERS_PER_ROUND)
        for n in range(k)
        for _ in range(REPEATS)
    ]


def run_on_both(servers: Servers, run: Callable[[int, ig.IngestServiceStub, int], None]) -> None:
    """`run(server, stub, thread)` on THREADS_PER_SERVER client threads per server, each server over its own
    channel; returns when every thread has finished (a bounded wait)."""
    channels = [grpc.insecure_channel(target) for target in servers.targets]
    threads = [
        threading.Thread(target=run, args=(server, ig.IngestServiceStub(channel), t))
        for server, channel in enumerate(channels)
        for t in range(THREADS_PER_SERVER)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for channel in channels:
        channel.close()
    assert not any(thread.is_alive() for thread in threads)


def drive_both(servers: Servers, token: str) -> tuple[list[Answer], list[str]]:
    """Send every (peer, provider id) to both servers, REPEATS times each, from threads that start each
    round of new peers together (a barrier), so the servers open the same rooms at the same moment."""
    answers: list[Answer] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_round = threading.Barrier(2 * THREADS_PER_SERVER)
    metadata = (("authorization", f"Bearer {token}"),)

    def run(server: int, stub: ig.IngestServiceStub, thread: int) -> None:
        for first_peer in range(0, PEERS, PEERS_PER_ROUND):
            next_round.wait(timeout=120)
            for peer, provider_id in round_of_work(server, first_peer)[thread::THREADS_PER_SERVER]:
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

    run_on_both(servers, run)
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


def backend_pid(conn: Connection) -> int:
    pid: int = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def wait_until_blocked_by(engine: Engine, pid: int) -> None:
    """Wait until some session waits on a lock that backend `pid` holds."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"pid": pid}).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError(f"no session came to wait on backend {pid}")


def test_an_ingest_that_loses_the_room_race_and_then_the_provider_id_race_answers_the_first_message(
    hub: Hub, tenant: Tenant, channel: grpc.Channel
) -> None:
    if hub.backend != "postgresql":
        pytest.skip("SQLite takes the write lock at BEGIN: transactions cannot interleave")
    stub = ig.IngestServiceStub(channel)

    def ingest(peer: str, provider_id: str) -> ip.IngestMessageResponse:
        request = ip.IngestMessageRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target=OURS),
            peer=common_pb2.Address(type=TEL, target=peer),
            text="race",
            transaction_id=provider_id,
        )
        response: ip.IngestMessageResponse = stub.IngestMessage(request, metadata=tenant.metadata, timeout=120)
        return response

    # A room (and the provider-id scope of our address) to park the rival message in.
    earlier = ingest("+15550401000", "SM-earlier")
    conversations, messages = Conversation.__table__, Message.__table__
    with hub.engine.connect() as conn:
        earlier_row = conn.execute(select(messages).where(messages.c.id == earlier.message.id)).one()
    now = now_us()
    rival_message = {**earlier_row._asdict(), "id": new_id(), "transaction_id": "SM-race", "tm_create": now}
    peer = "+15550401001"
    with hub.engine.connect() as room_conn, hub.engine.connect() as message_conn:
        room_tx, message_tx = room_conn.begin(), message_conn.begin()
        room_pid, message_pid = backend_pid(room_conn), backend_pid(message_conn)
        # The rival transactions, left uncommitted: one holds the provider id, one the new room.
        message_conn.execute(insert(messages).values(rival_message))
        room_id = new_id()
        room_conn.execute(
            insert(conversations).values(
                id=room_id,
                customer_id=tenant.customer_id,
                account_id=None,
                name="",
                detail="",
                type="message",
                self_type="tel",
                self_target=OURS,
                self_name="",
                peer_type="tel",
                peer_target=peer,
                peer_name="",
                owner_type="",
                owner_id="",
                metadata={},
                tags=[],
                state="open",
                tm_create=now,
                tm_update=now,
            )
        )
        outcome: dict[str, object] = {}

        def racer() -> None:
            try:
                outcome["response"] = ingest(peer, "SM-race")
            except grpc.RpcError as err:
                outcome["error"] = f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]

        thread = threading.Thread(target=racer)
        thread.start()
        try:
            wait_until_blocked_by(hub.engine, room_pid)  # the server's room insert waits on ours
            room_tx.commit()  # we win the room race
            wait_until_blocked_by(hub.engine, message_pid)  # its message insert waits on ours
            message_tx.commit()  # and the provider-id race
        finally:
            thread.join(timeout=120)
    assert "error" not in outcome, outcome
    response = outcome["response"]
    assert isinstance(response, ip.IngestMessageResponse)
    assert response.duplicate and response.message.id == rival_message["id"]
    with hub.engine.connect() as conn:
        rooms = conn.execute(
            select(conversations.c.id).where(
                conversations.c.customer_id == tenant.customer_id, conversations.c.peer_target == peer
            )
        ).all()
    assert [r.id for r in rooms] == [room_id]  # the server opened no second room


OTHER_OURS = "+15559990001"  # a second number of ours: the same person reaches two rooms' keys at once


def test_two_servers_ingesting_a_new_person_on_two_of_our_numbers_make_one_person_with_one_address_row(
    two_servers: Servers,
) -> None:
    """Issue 9: whichever keys the rooms get, a new sender address ends up held by exactly one contact
    (uq_contact_addresses_address decides), and every participant of that sender is that contact."""
    engine = two_servers.engine
    customer_id = create_customer(engine, "person-race")
    metadata = (("authorization", f"Bearer {create_token(engine, customer_id).token}"),)
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2 * THREADS_PER_SERVER)
    people = [f"+1555040{n:04d}" for n in range(PEERS)]

    def run(server: int, stub: ig.IngestServiceStub, thread: int) -> None:
        ours = (OURS, OTHER_OURS)[server]
        for first in range(0, PEERS, PEERS_PER_ROUND):
            start.wait(timeout=120)
            for peer in people[first : first + PEERS_PER_ROUND][thread % PEERS_PER_ROUND :: THREADS_PER_SERVER]:
                request = ip.IngestMessageRequest(
                    channel=SMS,
                    self=common_pb2.Address(type=TEL, target=ours),
                    peer=common_pb2.Address(type=TEL, target=peer),
                    text=f"hello from {peer} to {ours}",
                )
                try:
                    stub.IngestMessage(request, metadata=metadata, timeout=60)
                except grpc.RpcError as err:
                    with lock:
                        errors.append(f"server {server}: {err.code().name}: {err.details()}")  # type: ignore[attr-defined]

    run_on_both(two_servers, run)
    assert errors == []

    with engine.connect() as conn:
        address_rows = dict(
            conn.execute(
                text("SELECT target, count(*) FROM contact_addresses WHERE customer_id = :c GROUP BY target"),
                {"c": customer_id},
            ).all()
        )
        contacts_per_peer = dict(
            conn.execute(
                text(
                    "SELECT c.peer_target, count(DISTINCT p.contact_id) FROM participants p"
                    " JOIN conversations c ON c.id = p.conversation_id"
                    " WHERE p.customer_id = :c AND p.contact_id IS NOT NULL GROUP BY c.peer_target"
                ),
                {"c": customer_id},
            ).all()
        )
        unlinked = conn.execute(
            text("SELECT count(*) FROM participants WHERE customer_id = :c AND contact_id IS NULL"), {"c": customer_id}
        ).scalar_one()
        orphan_contacts = conn.execute(
            text(
                "SELECT count(*) FROM contacts c WHERE c.customer_id = :c"
                " AND NOT EXISTS (SELECT 1 FROM contact_addresses a WHERE a.contact_id = c.id)"
            ),
            {"c": customer_id},
        ).scalar_one()
    assert address_rows == {peer: 1 for peer in people}
    assert contacts_per_peer == {peer: 1 for peer in people}
    assert unlinked == 0
    assert orphan_contacts == 0  # a losing claimer's contact row was removed again
