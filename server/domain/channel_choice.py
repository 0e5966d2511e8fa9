"""Channel choice: which channel and account an outgoing message goes out on, and in which order to fall back.

The rule, in order:
1. an explicit channel in the request wins, unless the recipient opted out
   of it (refused: OptedOut);
2. content rules out channels: media needs MMS, LINE or email; text longer than
   1,600 characters is refused for SMS;
3. then the recipient's preferred channel; then their last active channel;
   then the conversation's own channel; then any other channel with an
   enabled account and an address for them. Channels the recipient opted
   out of (SMS STOP, an unsubscribe link) are skipped, fallbacks included.
A channel is usable when the recipient has an address on it and the customer
has an enabled account for it: on the conversation's channel, the account
whose address is the conversation's `self` (the conversation's own account
first); on another channel, the customer's oldest enabled account of that
channel. The first usable channel is the choice; the others, in the same
order, are where a failing delivery falls back to (when allowed).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from convhub.server.domain.addresses import Address
from convhub.server.domain.channels import CHANNEL_ADDRESS_TYPE

SMS_MAX_CHARACTERS = 1600
MEDIA_CHANNELS = frozenset({"message", "line", "email"})  # email: as attachments
CHANNEL_ORDER = ("message", "line", "email", "webchat")

EXPLICIT = "explicit"
PREFERRED = "preferred_channel"
LAST_ACTIVE = "last_active_channel"
CONVERSATION = "conversation"
AVAILABLE = "available"
FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class SendingAccount:
    """What the choice needs to know of one of the customer's accounts."""

    id: str
    channel: str  # the conversation type it carries
    provider: str
    address: Address | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class Recipient:
    """The conversation and the person a message goes to."""

    room_channel: str
    room_self: Address
    room_peer: Address
    room_account_id: str | None
    addresses: Sequence[Address] = ()  # the peer participant's addresses, any channel
    preferred_channel: str = ""
    last_active_channel: str = ""
    opted_out_channels: frozenset[str] = frozenset()  # the person's opt-outs (stored channel names)


@dataclass(frozen=True, slots=True)
class Route:
    """One way to deliver: this channel, through this account, from `sender` to `recipient`."""

    channel: str
    account_id: str
    sender: Address
    recipient: Address
    reason: str


class NoUsableChannel(Exception):
    """No channel can carry this message; `description` says why for each one considered."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class OptedOut(NoUsableChannel):
    """The explicitly requested channel is one the recipient opted out of."""


OPTED_OUT = "the recipient opted out"


def content_refusal(channel: str, text: str, has_media: bool) -> str | None:
    """Why the content cannot go on `channel`, or None when it can."""
    if has_media and channel not in MEDIA_CHANNELS:
        return "media needs MMS, LINE or email"
    if channel == "message" and len(text) > SMS_MAX_CHARACTERS:
        return f"text is {len(text)} characters; SMS takes at most {SMS_MAX_CHARACTERS:,}"
    return None


def _route(channel: str, recipient: Recipient, accounts: Sequence[SendingAccount]) -> Route | str:
    """The route on `channel`, or why there is none."""
    usable = [a for a in accounts if a.channel == channel and a.enabled and a.provider]
    candidates = [a for a in usable if a.address]
    if channel == recipient.room_channel:
        to = recipient.room_peer
        # The account whose address is the room's self; or the room's own account when it has no address
        # (VoIPBIN's LINE account body names none: the hook's `destination` became the room's self).
        own = [
            a
            for a in usable
            if (a.address is not None and a.address.target == recipient.room_self.target)
            or (a.address is None and a.id == recipient.room_account_id)
        ]
        own.sort(key=lambda a: a.id != recipient.room_account_id)  # the conversation's account first
        if not own:
            return f"no enabled account with address {recipient.room_self.target}"
        account = own[0]
        return Route(channel, account.id, account.address or recipient.room_self, to, "")
    else:
        address_type = CHANNEL_ADDRESS_TYPE[channel]
        theirs = [a for a in recipient.addresses if a.type == address_type]
        if not theirs:
            return f"the recipient has no {address_type} address"
        to = theirs[0]
        if not candidates:
            return "no enabled account"
        account = candidates[0]
    assert account.address is not None
    return Route(channel, account.id, account.address, to, "")


def choose_routes(
    *,
    explicit: str | None,
    text: str,
    has_media: bool,
    recipient: Recipient,
    accounts: Sequence[SendingAccount],
    exclude: Collection[str] = (),
) -> list[Route]:
    """Usable routes, best first (the first is the choice, the rest the fallback order); NoUsableChannel if none.

    `accounts` in creation order; `exclude`: channels already tried.
    """
    if explicit:
        order = [(explicit, EXPLICIT)]
    else:
        order = [
            (recipient.preferred_channel, PREFERRED),
            (recipient.last_active_channel, LAST_ACTIVE),
            (recipient.room_channel, CONVERSATION),
        ]
    order += [(c, AVAILABLE) for c in CHANNEL_ORDER]
    routes: list[Route] = []
    why: dict[str, str] = {}
    seen: set[str] = set()
    for channel, reason in order:
        if not channel or channel in seen or channel not in CHANNEL_ADDRESS_TYPE:
            continue
        seen.add(channel)
        if channel in exclude:
            why[channel] = "already tried"
            continue
        if channel in recipient.opted_out_channels:
            if channel == explicit:
                raise OptedOut(f"cannot send on {explicit}: {OPTED_OUT} of {explicit}")
            why[channel] = OPTED_OUT
            continue
        refusal = content_refusal(channel, text, has_media)
        if refusal is not None:
            why[channel] = refusal
            continue
        route = _route(channel, recipient, accounts)
        if isinstance(route, str):
            why[channel] = route
            continue
        routes.append(Route(route.channel, route.account_id, route.sender, route.recipient, reason))
    if explicit and (not routes or routes[0].channel != explicit):
        raise NoUsableChannel(f"cannot send on {explicit}: {why.get(explicit, 'unknown channel')}")
    if not routes:
        considered = [f"{channel}: {why[channel]}" for channel in CHANNEL_ORDER if channel in why]
        raise NoUsableChannel("no usable channel (" + "; ".join(considered) + ")")
    return routes
