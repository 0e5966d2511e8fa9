"""The pure rules of domain/: no server, no database."""

from __future__ import annotations

import pytest

from convhub.server.domain import inbound, messages
from convhub.server.domain.addresses import Address, normalize_address
from convhub.server.domain.participants import MAX_ADDRESSES, participant_addresses
from convhub.server.domain.rooms import Openings, room_request
from convhub.server.domain.violations import RuleViolation

US = "US"
OURS = Address("tel", "+15559990000", "Shop")
THEIRS = Address("tel", "(555) 111-2222", "Alice")
LINE_ACCOUNT = inbound.InboundAccount("acc-1", "line", Address("line", "Ushop", "Shop on LINE"))
BARE_SMS_ACCOUNT = inbound.InboundAccount("acc-2", "sms", None)


def resolve(**overrides: object) -> inbound.ResolvedInbound:
    args: dict[str, object] = {
        "channel": "message",
        "account": None,
        "self_address": OURS,
        "peer": THEIRS,
        "default_region": US,
    }
    args.update(overrides)
    return inbound.resolve(**args)  # type: ignore[arg-type]


def violation(call: object, *args: object, **kwargs: object) -> RuleViolation:
    with pytest.raises(RuleViolation) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_a_message_without_text_subject_or_media_is_refused_on_text() -> None:
    exc = violation(
        inbound.check_unresolved, has_account=True, channel=None, self_address=None, text="", subject="", medias=[]
    )
    assert exc.field == "text"
    for content in ({"text": "hi"}, {"subject": "Re: order"}, {"medias": [{"url": "https://x.test/a.png"}]}):
        kwargs: dict[str, object] = {"text": "", "subject": "", "medias": [], **content}
        inbound.check_unresolved(has_account=True, channel=None, self_address=None, **kwargs)  # type: ignore[arg-type]


def test_without_an_account_channel_and_self_are_required() -> None:
    common = {"text": "hi", "subject": "", "medias": []}
    exc = violation(inbound.check_unresolved, has_account=False, channel=None, self_address=OURS, **common)
    assert exc.field == "channel"
    exc = violation(inbound.check_unresolved, has_account=False, channel="message", self_address=None, **common)
    assert exc.field == "self"
    inbound.check_unresolved(has_account=True, channel=None, self_address=None, **common)  # type: ignore[arg-type]


def test_the_account_decides_the_channel_and_a_different_one_is_refused() -> None:
    resolved = resolve(channel=None, account=LINE_ACCOUNT, self_address=None, peer=Address("", "Ualice"))
    assert resolved.channel == "line"
    exc = violation(resolve, channel="message", account=LINE_ACCOUNT, self_address=None, peer=Address("", "Ualice"))
    assert exc.field == "channel" and "carries line" in exc.description


def test_our_address_defaults_to_the_accounts_and_is_required_when_it_has_none() -> None:
    resolved = resolve(channel=None, account=LINE_ACCOUNT, self_address=None, peer=Address("line", "Ualice"))
    assert resolved.self_address == LINE_ACCOUNT.address
    exc = violation(resolve, channel=None, account=BARE_SMS_ACCOUNT, self_address=None)
    assert exc.field == "self" and "account has no address" in exc.description


def test_both_addresses_are_normalised_for_the_channel_and_untyped_ones_take_its_type() -> None:
    resolved = resolve(self_address=Address("", "555 999 0000", "Shop"))
    assert resolved.self_address == Address("tel", "+15559990000", "Shop")
    assert resolved.peer == Address("tel", "+15551112222", "Alice")


def test_an_address_of_another_channels_type_is_refused_naming_its_type() -> None:
    exc = violation(resolve, peer=Address("email", "alice@example.com"))
    assert exc.field == "peer.type"
    exc = violation(resolve, self_address=Address("tel", "not a number"))
    assert exc.field == "self.target"


def test_provider_ids_are_unique_per_account_else_per_channel_and_our_address() -> None:
    with_account = resolve(channel=None, account=LINE_ACCOUNT, self_address=None, peer=Address("", "Ualice"))
    assert with_account.dedupe_scope == "acc-1"
    assert resolve().dedupe_scope == "message:+15559990000"


def test_an_inbound_message_is_stored_incoming_and_received() -> None:
    resolved = resolve()
    assert (resolved.direction, resolved.status) == (messages.INCOMING, messages.DONE)


def test_the_room_key_is_normalised_targets_not_names() -> None:
    a = room_request("c1", "message", None, Address("tel", "+15559990000", "Shop"), Address("tel", "+15551112222", "A"))
    b = room_request("c1", "message", "acc", Address("tel", "+15559990000", ""), Address("tel", "+15551112222", "Al"))
    assert a.key == b.key
    assert a.key.index_values == ("c1", "message", "+15559990000", "+15551112222")
    assert (a.self_name, a.peer_name) == ("Shop", "A")


def test_only_the_first_message_into_a_newly_inserted_room_opened_it() -> None:
    key = room_request("c1", "message", None, OURS, Address("tel", "+15551112222")).key
    other = room_request("c1", "message", None, OURS, Address("tel", "+15553334444")).key
    openings = Openings()
    assert openings.claim(key, inserted=True)
    assert not openings.claim(key, inserted=True)
    assert not openings.claim(other, inserted=False)  # an existing room was joined, not opened


def test_message_status_moves_forward_only() -> None:
    assert messages.initial_status(messages.OUTGOING) == messages.PROGRESSING
    assert messages.can_move(messages.PROGRESSING, messages.DONE)
    assert messages.can_move(messages.PROGRESSING, messages.FAILED)
    for final in (messages.DONE, messages.FAILED):
        for target in (messages.PROGRESSING, messages.DONE, messages.FAILED):
            assert not messages.can_move(final, target)


def test_a_participant_has_one_to_twenty_typed_addresses_each_normalised() -> None:
    exc = violation(participant_addresses, "participant.addresses", [], default_region=US)
    assert exc.field == "participant.addresses"
    too_many = [Address("tel", f"+1555000{i:04d}") for i in range(MAX_ADDRESSES + 1)]
    assert violation(participant_addresses, "p", too_many, default_region=US).field == "p"
    assert (
        violation(participant_addresses, "p", [OURS, Address("", "x@y.test")], default_region=US).field == "p[1].type"
    )
    assert participant_addresses("p", [Address("email", "Alice@Example.COM")], default_region=US) == [
        Address("email", "alice@example.com")
    ]


def test_normalising_keeps_the_name_and_requires_a_target() -> None:
    assert normalize_address("f", THEIRS, expected_type="tel", default_region=US).name == "Alice"
    assert (
        violation(normalize_address, "f", Address("tel", ""), expected_type=None, default_region=US).field == "f.target"
    )
