"""Room matching (domain/rooms.py rules a-c) against a small pure reference model, with hypothesis.

Random sequences of inbound messages (alone, or several submitted at once so
they share one group-commit batch), closes, address adds and participant
adds run against the real IngestService and ParticipantService on SQLite and
PostgreSQL; the model predicts, for every message, which conversation it
lands in (by creation order), and for every add whether it is refused.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.errors import AlreadyExists
from convhub.server.services.ingest import InboundMessage, IngestService
from convhub.server.services.participants import NewParticipant, ParticipantPatch, ParticipantService
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database
from convhub.server.store.models import Conversation
from tests.conftest import BACKENDS, migrated_databases

PEERS = [Address("tel", "+15550200001"), Address("tel", "+15550200002"), Address("email", "ann@example.com")]
PEERS += [Address("email", "bob@example.com"), Address("tel", "+15550200003")]
OURS = {
    "tel": [Address("tel", "+15559990000"), Address("tel", "+15559990001")],
    "email": [Address("email", "s@shop.test")],
}
CHANNEL = {"tel": "message", "email": "email"}


# ---------------------------------------------------------------------------------------------- the model


@dataclass
class ModelConversation:
    key: tuple[str, str, str]
    people: set[int]
    open: bool = True
    activity: int = 0


@dataclass
class Model:
    """Rules a-c, one message after another; conversations and people are numbered by creation."""

    holder: dict[tuple[str, str], int] = field(default_factory=dict)  # address -> person
    conversations: list[ModelConversation] = field(default_factory=list)
    clock: int = 0
    people: int = 0

    def person(self, address: Address) -> int:
        found = self.holder.get((address.type, address.target))
        if found is None:
            found = self.holder[(address.type, address.target)] = self.people
            self.people += 1
        return found

    def inbound(self, peer: Address, ours: Address, thread: int | None) -> int:
        person = self.person(peer)
        mine = [i for i, c in enumerate(self.conversations) if c.open and person in c.people]
        if thread is not None and thread < len(self.conversations) and self.conversations[thread].open:
            target = thread  # a
        elif mine:
            target = max(mine, key=lambda i: self.conversations[i].activity)  # b (activities never tie here)
        else:  # c
            key = (CHANNEL[peer.type], ours.target, peer.target)
            same = [i for i, c in enumerate(self.conversations) if c.open and c.key == key]
            if same:
                target = same[0]
            else:
                self.conversations.append(ModelConversation(key, {person}))
                target = len(self.conversations) - 1
        self.clock += 1
        self.conversations[target].activity = self.clock
        return target

    def add_address(self, owner: Address, new: Address) -> bool:
        """The owner's person takes `new`; False (ALREADY_EXISTS) when another person holds it."""
        person = self.holder[(owner.type, owner.target)]
        holder = self.holder.get((new.type, new.target))
        if holder is not None and holder != person:
            return False
        self.holder[(new.type, new.target)] = person
        return True

    def add_participant(self, conversation: int, address: Address) -> bool:
        """The person holding `address` (a new one if none) joins; False when already taking part."""
        person = self.person(address)
        if person in self.conversations[conversation].people:
            return False
        self.conversations[conversation].people.add(person)
        return True


# ---------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Message:
    peer: int
    ours: int
    thread: int | None


@dataclass(frozen=True)
class Batch:
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Close:
    conversation: int


@dataclass(frozen=True)
class AddAddress:
    owner: int
    new: int


@dataclass(frozen=True)
class AddParticipant:
    conversation: int
    peer: int


messages = st.builds(
    Message,
    peer=st.integers(0, len(PEERS) - 1),
    ours=st.integers(0, 1),
    thread=st.none() | st.integers(0, 5),
)
steps = st.lists(
    st.one_of(
        st.builds(Batch, st.lists(messages, min_size=1, max_size=3).map(tuple)),
        st.builds(Close, st.integers(0, 5)),
        st.builds(AddAddress, st.integers(0, len(PEERS) - 1), st.integers(0, len(PEERS) - 1)),
        st.builds(AddParticipant, st.integers(0, 5), st.integers(0, len(PEERS) - 1)),
    ),
    min_size=1,
    max_size=14,
)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Services:
    db: Database
    ingest: IngestService
    participants: ParticipantService


@pytest.fixture(scope="module", params=BACKENDS)
def services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp: Path = tmp_path_factory.mktemp(f"model-{request.param}")
    for db in migrated_databases(request.param, tmp):
        with ThreadPoolExecutor(2) as executor:
            yield Services(db, IngestService(db, Settings(), executor), ParticipantService(db, Settings()))


_tenants = itertools.count()


def run(services: Services, plan: list[Batch | Close | AddAddress | AddParticipant]) -> None:
    customer_id = create_customer(services.db.writer, f"model-{next(_tenants)}")
    model = Model()
    ids: list[str] = []  # conversation ids in creation order (model numbering)
    participant_of: dict[int, tuple[str, str]] = {}  # model person -> (conversation id, participant id)

    def number(conversation_id: str) -> int:
        if conversation_id not in ids:
            ids.append(conversation_id)
        return ids.index(conversation_id)

    async def ingest_batch(batch: Batch) -> list[int]:
        inbound = []
        for m in batch.messages:
            peer = PEERS[m.peer]
            ours = OURS[peer.type][m.ours % len(OURS[peer.type])]
            thread = ids[m.thread] if m.thread is not None and m.thread < len(ids) else None
            inbound.append(
                InboundMessage(
                    customer_id=customer_id,
                    channel=CHANNEL[peer.type],
                    self_address=ours,
                    peer=peer,
                    text="hi",
                    thread_conversation_id=thread,
                )
            )
        results = await asyncio.gather(*(services.ingest.ingest(i) for i in inbound))
        return [number(r.conversation.id) for r in results]

    for step in plan:
        if isinstance(step, Batch):
            expected = []
            known = len(ids)  # a thread names a conversation that existed when the batch was sent
            for m in step.messages:
                peer = PEERS[m.peer]
                ours = OURS[peer.type][m.ours % len(OURS[peer.type])]
                expected.append(
                    model.inbound(peer, ours, m.thread if m.thread is not None and m.thread < known else None)
                )
            got = asyncio.run(ingest_batch(step))
            assert got == expected, (step, got, expected)
            for m, conversation in zip(step.messages, got, strict=True):
                person = model.holder[(PEERS[m.peer].type, PEERS[m.peer].target)]
                if person in model.conversations[conversation].people and person not in participant_of:
                    participant_of[person] = (ids[conversation], "")
        elif isinstance(step, Close) and step.conversation < len(ids):
            model.conversations[step.conversation].open = False
            table = Conversation.__table__
            with services.db.writer.begin() as conn:
                conn.execute(update(table).where(table.c.id == ids[step.conversation]).values(state="closed"))
        elif isinstance(step, AddAddress):
            owner, new = PEERS[step.owner], PEERS[step.new]
            if (owner.type, owner.target) not in model.holder:
                continue
            person = model.holder[(owner.type, owner.target)]
            if person not in participant_of:  # known only from a threaded message: no participant to update
                continue
            conversation_id, participant_id = _participant(services, customer_id, participant_of[person], owner)
            current = _addresses(services, customer_id, conversation_id, participant_id)
            want = current + ([new] if (new.type, new.target) not in {(a.type, a.target) for a in current} else [])
            allowed = model.add_address(owner, new)
            try:
                services.participants.update(
                    ParticipantPatch(
                        customer_id, conversation_id, participant_id, frozenset({"addresses"}), addresses=want
                    )
                )
                assert allowed, step
            except AlreadyExists:
                assert not allowed, step
        elif isinstance(step, AddParticipant) and step.conversation < len(ids):
            peer = PEERS[step.peer]
            allowed = model.add_participant(step.conversation, peer)
            try:
                services.participants.add(NewParticipant(customer_id, ids[step.conversation], [peer]))
                assert allowed, step
            except AlreadyExists:
                assert not allowed, step
            person = model.holder[(peer.type, peer.target)]
            participant_of.setdefault(person, (ids[step.conversation], ""))


def _participant(services: Services, customer_id: str, where: tuple[str, str], owner: Address) -> tuple[str, str]:
    """The participant id of the person holding `owner` in conversation where[0]."""
    from convhub.server.store import contacts

    with services.db.read() as conn:
        holder = contacts.holders(conn, [contacts.address_key(customer_id, owner)])[
            contacts.address_key(customer_id, owner)
        ]
        participant_id = contacts.participant_in(conn, holder, where[0])
    assert participant_id is not None
    return where[0], participant_id


def _addresses(services: Services, customer_id: str, conversation_id: str, participant_id: str) -> list[Address]:
    from convhub.server.services import resources
    from convhub.server.services.people import load_participant
    from convhub.server.store import participants

    with services.db.read() as conn:
        shown = load_participant(conn, participants.live.by_id(conn, participant_id))
    return [Address(resources.ADDRESS_TYPE.name(a.type), a.target) for a in shown.addresses]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_the_service_matches_rooms_as_the_reference_model_does(
    services: Services, plan: list[Batch | Close | AddAddress | AddParticipant]
) -> None:
    run(services, plan)


def test_a_thread_to_a_closed_conversation_falls_through_to_the_persons_latest(services: Services) -> None:
    """Rule a's fall-through, spelled out: a closed thread target is ignored, rule b decides."""
    run(
        services,
        [
            Batch((Message(0, 0, None),)),  # person 0 opens conversation 0
            Batch((Message(2, 0, None),)),  # ann opens conversation 1
            Close(1),
            Batch((Message(0, 1, 1),)),  # threads to closed 1: joins person 0's conversation 0
            Batch((Message(2, 0, 0),)),  # ann threads into 0 (open): joins it though not a participant
        ],
    )


def test_a_person_in_two_open_conversations_joins_the_most_recently_active(services: Services) -> None:
    run(
        services,
        [
            Batch((Message(0, 0, None),)),  # person 0 opens conversation 0
            Batch((Message(1, 0, None),)),  # person 1 opens conversation 1
            AddParticipant(1, 0),  # person 0 also takes part in conversation 1, now the latest active
            Batch((Message(0, 1, None),)),  # -> 1
            Batch((Message(1, 0, 0),)),  # person 1 threads into 0: 0 is now the latest
            Batch((Message(0, 0, None),)),  # -> 0
        ],
    )


def test_within_one_batch_a_message_makes_its_conversation_the_latest_for_everyone_in_it(services: Services) -> None:
    run(
        services,
        [
            Batch((Message(0, 0, None),)),
            Batch((Message(1, 0, None),)),
            AddParticipant(1, 0),
            Batch((Message(0, 0, 0), Message(0, 1, None), Message(1, 0, None), Message(0, 0, None))),
        ],
    )
