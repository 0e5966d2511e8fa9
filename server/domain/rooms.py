"""The room rule (DESIGN.md invariant 2): which key opens or joins a room, and what counts as opening it.

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
