"""Web chat sessions: a page's widget key names the account; the session signs the visitor's token.

A visitor is `webchat:<visitor id>` on the account. Opening a session
writes nothing: the token names the visitor's open conversation (their
room by the room rule, DESIGN.md invariant 2), or none yet. The visitor's
first message opens it through the shared ingest, and the answer to that
post carries a token for it; so a page view alone opens no conversation and
sends no webhook. A returning visitor (a token this account signed, expired
at most CONVHUB_WEBCHAT_RETURN_WINDOW ago) keeps their visitor id and,
while it is open, their conversation, whichever channel it belongs to.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

from convhub.server.config import Settings
from convhub.server.domain import rooms
from convhub.server.domain.addresses import Address
from convhub.server.errors import NotFound, Unauthenticated
from convhub.server.services.channel_accounts import OpenedAccount, opened
from convhub.server.store import accounts, conversations
from convhub.server.store.db import Database
from convhub.server.store.rooms import find_rooms
from convhub.server.webchat import tokens
from convhub.server.webchat.keys import SIGNING_SECRET

PROVIDER = "webchat"


@dataclass(frozen=True, slots=True)
class VisitorSession:
    token: str
    claims: tokens.VisitorClaims  # conversation_id "" until the visitor's first message opens one


@dataclass(frozen=True, slots=True)
class Visitor:
    """A verified visitor token and the live account that signed it."""

    account: OpenedAccount
    claims: tokens.VisitorClaims

    @property
    def address(self) -> Address:
        return Address("webchat", self.claims.visitor_id)


def new_visitor_id() -> str:
    return "v" + secrets.token_hex(16)


class WebchatService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _secret(self, account: OpenedAccount) -> str:
        secret = account.credentials.get(SIGNING_SECRET, "")
        if not secret:  # only an account whose credentials were replaced without one
            raise Unauthenticated("this web chat account has no signing secret")
        return secret

    def visitor(self, token: str, *, grace: float = 0) -> Visitor:
        """The visitor a token names, verified against its live web chat account; UNAUTHENTICATED otherwise."""
        try:
            claims = tokens.unverified_claims(token)
        except tokens.BadVisitorToken as exc:
            raise Unauthenticated(f"visitor token: {exc}") from None
        with self.db.read() as conn:
            row = accounts.live_by_id(conn, claims.account_id) if _is_uuid(claims.account_id) else None
        if row is None or row.provider != PROVIDER:
            raise Unauthenticated("visitor token: no such web chat account")
        account = opened(row, self.db.secrets)
        try:
            claims = tokens.verify(token, self._secret(account), now=time.time(), grace=grace)
        except tokens.BadVisitorToken as exc:
            raise Unauthenticated(f"visitor token: {exc}") from None
        return Visitor(account, claims)

    def sign(self, account: OpenedAccount, visitor_id: str, conversation_id: str) -> VisitorSession:
        claims = tokens.VisitorClaims(
            account.id, visitor_id, conversation_id, int(time.time()) + self.settings.webchat_token_ttl
        )
        return VisitorSession(tokens.sign(claims, self._secret(account)), claims)

    def open_session(self, widget_key: str, returning: str | None) -> VisitorSession:
        """A session for a new visitor, or for the returning one `returning` names (an invalid one: a new visitor)."""
        with self.db.read() as conn:
            row = accounts.live_by_widget_key(conn, widget_key)
        if row is None or row.provider != PROVIDER:
            raise NotFound("widget_key", widget_key[:64])
        account = opened(row, self.db.secrets)
        previous: tokens.VisitorClaims | None = None
        if returning:
            try:
                back = self.visitor(returning, grace=self.settings.webchat_return_window)
            except Unauthenticated:
                back = None  # a stale or foreign token in the page's storage: start afresh
            if back is not None and back.account.id == account.id:
                previous = back.claims
        visitor_id = previous.visitor_id if previous else new_visitor_id()
        conversation_id = self._room(account, visitor_id, previous.conversation_id if previous else None)
        return self.sign(account, visitor_id, conversation_id)

    def _room(self, account: OpenedAccount, visitor_id: str, kept: str | None) -> str:
        """The visitor's conversation: `kept` while it is open, else their open room on this account, else ""."""
        with self.db.read() as conn:
            if kept:
                room = conversations.live.get(conn, account.customer_id, kept)
                if room is not None and room.state == rooms.OPEN:
                    return room.id
            assert account.address is not None  # web chat accounts always have one (webchat/keys.py)
            key = rooms.room_request(
                account.customer_id, "webchat", account.id, account.address, Address("webchat", visitor_id)
            ).key
            found = find_rooms(conn, [key]).get(key.index_values)
        return found.id if found is not None else ""


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
