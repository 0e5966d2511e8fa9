"""The room rule (DESIGN.md invariant 2): which conversation an inbound message joins, or which key opens one.

An inbound message goes, in this order:
a. to the conversation its provider's threading points at
   (`InboundMessage.thread_conversation_id`, e.g. an email's In-Reply-To /
   References), when that conversation is the customer's and open; a closed,
   deleted, unknown or another customer's one is ignored (fall through to b);
b. otherwise, when its sender's address belongs to a person (a contact:
   an address gets one with its first message, or when a participant is
   given it), to that person's most recently active open conversation among
   those they take part in (as a live participant), whatever its channel:
   the one with the latest message (or, with none, the latest creation);
   ties go to the greater conversation id;
c. otherwise by the landed key rule below: the open room of its (channel,
   our address, their address), or a new one.
A message received makes its conversation the person's most recently active,
so later messages of the same batch follow it (`PersonRouting`).

Among a customer's open conversations there is at most one per (channel,
our address, their address), by normalised target: `RoomKey.index_values`
are the columns of the partial unique index `uq_conversations_open_room`.
An inbound message joins the open room of its key, or opens one; when
several messages of one batch share a new key, only the first opened it
(`Openings`). Finding and inserting rooms race-free is store/rooms.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from convhub.server.domain.addresses import Address

OPEN = "open"
CLOSED = "closed"  # a deleted room is closed: it no longer holds its key


@dataclass(frozen=True, slots=True)
class RoomKey:
    customer_id: str
    channel: str
    self_type: str
    self_target: str
    peer_type: str
    peer_target: str

    @property
    def index_values(self) -> tuple[str, str, str, str]:
        """The columns of uq_conversations_open_room, in its order."""
        return (self.customer_id, self.channel, self.self_target, self.peer_target)


@dataclass(frozen=True, slots=True)
class RoomRequest:
    """A key to match, and what to open the room with if there is none."""

    key: RoomKey
    account_id: str | None
    self_name: str
    peer_name: str


def room_request(
    customer_id: str, channel: str, account_id: str | None, self_address: Address, peer: Address
) -> RoomRequest:
    """The room an inbound message belongs in: keyed by normalised addresses; names only label a new room."""
    key = RoomKey(customer_id, channel, self_address.type, self_address.target, peer.type, peer.target)
    return RoomRequest(key, account_id, self_name=self_address.name, peer_name=peer.name)


class Openings:
    """Within one batch: the first message into a newly inserted room opened it; later ones joined it."""

    def __init__(self) -> None:
        self._opened: set[RoomKey] = set()

    def claim(self, key: RoomKey, *, inserted: bool) -> bool:
        """True if this message opened the room (it was inserted for this batch and nobody claimed it yet)."""
        opened = inserted and key not in self._opened
        self._opened.add(key)
        return opened


@dataclass(frozen=True, slots=True)
class Candidate:
    """An open conversation a person takes part in, and when it was last active (microseconds)."""

    activity: int
    conversation_id: str


class PersonRouting:
    """Rules a-c for one batch, in order: each message's target is a conversation id (a, b) or a key (c).

    Starts from each sender's open conversations as stored; every message
    routed makes its target the most recently active conversation (of
    everyone in it), and a room opened by rule c becomes its sender's. So a
    batch decides exactly as if its messages had come one after another.
    """

    def __init__(self, rooms: dict[str, list[Candidate]]) -> None:
        self._rooms: dict[str, set[str | RoomKey]] = {
            contact: {c.conversation_id for c in candidates} for contact, candidates in rooms.items()
        }
        # Stored activity ranks below anything routed in this batch, which ranks by arrival.
        self._rank: dict[str | RoomKey, tuple[int, int, str]] = {
            c.conversation_id: (0, c.activity, c.conversation_id) for candidates in rooms.values() for c in candidates
        }
        self._arrivals = 0

    def route(self, contact_id: str, thread_conversation_id: str | None, key: RoomKey) -> str | RoomKey:
        mine = self._rooms.setdefault(contact_id, set())
        target: str | RoomKey
        if thread_conversation_id is not None:
            target = thread_conversation_id
        elif mine:
            target = max(mine, key=lambda room: self._rank[room])
        else:
            target = key
            mine.add(key)
        self._arrivals += 1
        self._rank[target] = (1, self._arrivals, "")
        return target
