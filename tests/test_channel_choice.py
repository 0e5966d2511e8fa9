"""The pure sending rules: channel choice and its fallback order, delivery status, retry backoff."""

from __future__ import annotations

import pytest

from convhub.server.domain.addresses import Address
from convhub.server.domain.channel_choice import NoUsableChannel, OptedOut, Recipient, SendingAccount, choose_routes
from convhub.server.domain.delivery import advance, retry_delay

SELF = Address("tel", "+15559990000")
PEER = Address("tel", "+15550001111")
LINE_ID = Address("line", "U4af4980629")
SMS = SendingAccount("sms-1", "message", "twilio", SELF, True)
LINE = SendingAccount("line-1", "line", "line", Address("line", "@shop"), True)


def _recipient(**fields: object) -> Recipient:
    values: dict[str, object] = {
        "room_channel": "message",
        "room_self": SELF,
        "room_peer": PEER,
        "room_account_id": None,
        "addresses": [PEER, LINE_ID],
        "preferred_channel": "",
        "last_active_channel": "",
    }
    values.update(fields)
    return Recipient(**values)  # type: ignore[arg-type]


def _choose(
    recipient: Recipient | None = None, accounts: list[SendingAccount] | None = None, **kw: object
) -> list[tuple[str, str]]:
    routes = choose_routes(
        explicit=kw.get("explicit"),  # type: ignore[arg-type]
        text=str(kw.get("text", "hi")),
        has_media=bool(kw.get("has_media", False)),
        recipient=recipient or _recipient(),
        accounts=accounts if accounts is not None else [SMS, LINE],
        exclude=kw.get("exclude", ()),  # type: ignore[arg-type]
    )
    return [(r.channel, r.reason) for r in routes]


def test_order_preferred_then_last_active_then_the_conversation_then_any() -> None:
    assert _choose(_recipient(preferred_channel="line")) == [("line", "preferred_channel"), ("message", "conversation")]
    assert _choose(_recipient(last_active_channel="line")) == [
        ("line", "last_active_channel"),
        ("message", "conversation"),
    ]
    assert _choose(_recipient(preferred_channel="message", last_active_channel="line"))[0] == (
        "message",
        "preferred_channel",
    )
    assert _choose() == [("message", "conversation"), ("line", "available")]


def test_an_explicit_channel_wins_and_must_be_usable() -> None:
    assert _choose(_recipient(preferred_channel="message"), explicit="line")[0] == ("line", "explicit")
    with pytest.raises(NoUsableChannel, match="cannot send on line: no enabled account"):
        _choose(explicit="line", accounts=[SMS])


def test_content_rules_media_needs_mms_line_or_email_and_long_text_is_not_sms() -> None:
    assert _choose(text="x" * 1601) == [("line", "available")]
    assert _choose(text="x" * 1600)[0] == ("message", "conversation")
    with pytest.raises(NoUsableChannel, match="SMS takes at most 1,600"):
        _choose(text="x" * 1601, accounts=[SMS])
    assert _choose(has_media=True)[0] == ("message", "conversation")
    them = Address("email", "c@d.test")
    email_room = _recipient(
        room_channel="email", room_self=Address("email", "a@b.test"), room_peer=them, addresses=[them]
    )
    email_account = SendingAccount("e", "email", "smtp", Address("email", "a@b.test"), True)
    assert _choose(email_room, [email_account], has_media=True)[0] == ("email", "conversation")  # as attachments
    visitor = Address("webchat", "v1")
    webchat_room = _recipient(
        room_channel="webchat", room_self=Address("webchat", "w1"), room_peer=visitor, addresses=[visitor]
    )
    with pytest.raises(NoUsableChannel, match="media needs MMS, LINE or email"):
        _choose(webchat_room, [SendingAccount("w", "webchat", "", Address("webchat", "w1"), True)], has_media=True)


def test_the_account_is_an_enabled_one_whose_address_is_the_conversations_self() -> None:
    other_number = SendingAccount("sms-2", "message", "twilio", Address("tel", "+15558880000"), True)
    disabled = SendingAccount("sms-3", "message", "twilio", SELF, False)
    with pytest.raises(NoUsableChannel, match="no enabled account with address \\+15559990000"):
        _choose(accounts=[other_number, disabled])
    second = SendingAccount("sms-4", "message", "twilio", SELF, True)
    routes = choose_routes(
        explicit=None,
        text="hi",
        has_media=False,
        recipient=_recipient(room_account_id="sms-4"),
        accounts=[SMS, second],
    )
    assert routes[0].account_id == "sms-4"  # the conversation's own account first
    assert (routes[0].sender, routes[0].recipient) == (SELF, PEER)


def test_other_channels_need_an_address_for_the_person() -> None:
    assert _choose(_recipient(addresses=[PEER], preferred_channel="line")) == [("message", "conversation")]


def test_fallback_excludes_channels_already_tried() -> None:
    assert _choose(_recipient(preferred_channel="line"), exclude=["line"]) == [("message", "conversation")]
    with pytest.raises(NoUsableChannel, match="already tried"):
        _choose(exclude=["line", "message"])


def test_delivery_status_moves_forward_only() -> None:
    assert advance("queued", "sent") == "sent"
    assert advance("delivered", "sent") == "delivered"
    assert advance("delivered", "read") == "read"
    assert advance("read", "delivered") == "read"
    assert advance("sent", "undelivered") == "undelivered"
    assert advance("delivered", "failed") == "delivered"
    assert advance("sent", "bogus") == "sent"


def test_retry_delay_grows_exponentially_with_jitter_bounded_and_honours_retry_after() -> None:
    low = [retry_delay(n, minimum=1, maximum=60, rand=lambda: 0.0) for n in range(1, 9)]
    high = [retry_delay(n, minimum=1, maximum=60, rand=lambda: 1.0) for n in range(1, 9)]
    assert high == [1, 2, 4, 8, 16, 32, 60, 60]
    assert low == [h / 2 for h in high]
    assert retry_delay(1, minimum=1, maximum=60, retry_after=30, rand=lambda: 0.0) == 30
    assert retry_delay(1, minimum=1, maximum=60, retry_after=10**6, rand=lambda: 0.0) == 3600


EMAIL_ADDRESS = Address("email", "alice@example.com")
EMAIL = SendingAccount("email-1", "email", "smtp", Address("email", "support@shop.test"), True)


def test_an_opted_out_channel_is_skipped_by_the_choice_and_its_fallbacks() -> None:
    opted_out_of_sms = _recipient(opted_out_channels=frozenset({"message"}))
    assert _choose(opted_out_of_sms) == [("line", "available")]
    assert _choose(_recipient(preferred_channel="message", opted_out_channels=frozenset({"message"}))) == [
        ("line", "available")
    ]
    with pytest.raises(NoUsableChannel, match="message: the recipient opted out"):
        _choose(opted_out_of_sms, accounts=[SMS])


def test_an_explicit_opted_out_channel_is_refused_naming_it() -> None:
    with pytest.raises(OptedOut, match="cannot send on message: the recipient opted out of message"):
        _choose(_recipient(opted_out_channels=frozenset({"message"})), explicit="message")
    assert _choose(_recipient(opted_out_channels=frozenset({"line"})), explicit="message")[0] == (
        "message",
        "explicit",
    )


def test_answer_by_email_needs_only_the_channel_or_the_preference_given_an_email_address() -> None:
    """Issue 9: an SMS conversation answered by email goes to the person's email address via the email account."""
    person = _recipient(addresses=[PEER, EMAIL_ADDRESS])
    routes = choose_routes(
        explicit="email", text="here is the PDF", has_media=False, recipient=person, accounts=[SMS, EMAIL]
    )
    assert (routes[0].channel, routes[0].recipient, routes[0].sender) == ("email", EMAIL_ADDRESS, EMAIL.address)
    preferring = _recipient(addresses=[PEER, EMAIL_ADDRESS], preferred_channel="email")
    assert _choose(preferring, [SMS, EMAIL])[0] == ("email", "preferred_channel")
    with pytest.raises(NoUsableChannel, match="the recipient has no email address"):
        _choose(_recipient(addresses=[PEER]), [SMS, EMAIL], explicit="email")


def test_the_rooms_own_account_without_an_address_answers_from_the_rooms_self() -> None:
    """VoIPBIN's LINE account body names no address; the hook's destination became the room's self."""
    bot = Address("line", "U" + "0" * 32)
    no_address = SendingAccount("line-2", "line", "line", None, True)
    room = _recipient(room_channel="line", room_self=bot, room_peer=LINE_ID, room_account_id="line-2", addresses=[])
    routes = choose_routes(explicit=None, text="hi", has_media=False, recipient=room, accounts=[no_address])
    assert [(r.channel, r.account_id, r.sender, r.recipient) for r in routes] == [("line", "line-2", bot, LINE_ID)]
    elsewhere = _recipient(room_channel="line", room_self=bot, room_peer=LINE_ID, room_account_id="other")
    with pytest.raises(NoUsableChannel, match="no enabled account with address"):
        choose_routes(explicit=None, text="hi", has_media=False, recipient=elsewhere, accounts=[no_address])
    disabled = SendingAccount("line-2", "line", "line", None, False)
    with pytest.raises(NoUsableChannel):
        choose_routes(explicit=None, text="hi", has_media=False, recipient=room, accounts=[disabled])
