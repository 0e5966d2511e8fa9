"""Sending over Twilio against the real server and the stand-in: reply, receipts, media, failures, retries.

Every test starts from an inbound message (a person texts our number), then
answers with the VoIPBIN call `POST /v1.0/conversations/{id}/messages`.
"""

from __future__ import annotations

from typing import Any

from tests.channel_rig import Rig, new_number
from tests.twilio_standin import Behaviour


def _room(rig: Rig, account: dict[str, Any], peer: str) -> dict[str, Any]:
    assert rig.inbound(account, peer, "Hi, is my order ready?").status_code == 200
    [room] = [c for c in rig.conversations() if c["peer"]["target"] == peer]
    return room


def test_a_reply_goes_out_on_the_same_channel_and_receipts_refine_its_delivery_status(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    queued = rig.send(room["id"], "Your order has been shipped!")
    assert (queued["status"], queued["delivery_status"], queued["direction"]) == ("progressing", "queued", "outgoing")
    assert (queued["channel"], queued["account_id"], queued["channel_reason"]) == (
        "message",
        account["id"],
        "preferred_channel",
    )
    assert (queued["source"]["target"], queued["destination"]["target"]) == (account["number"], peer)
    done = rig.wait_message(queued)
    assert done["status"] == "done", done
    assert done["delivery_status"] == "queued"  # what Twilio answered: queued at Twilio
    [sent] = rig.standin.sent_to(peer)
    assert (sent["from"], sent["body"], sent["account_sid"]) == (
        account["number"],
        "Your order has been shipped!",
        account["sid"],
    )
    assert done["transaction_id"] == sent["sid"]
    assert sent["status_callback"] == f"https://hub.example.test/v1.0/hooks/twilio/{account['id']}/status"
    assert rig.status_callback(account, sent["sid"], "sent").status_code == 200
    assert rig.status_callback(account, sent["sid"], "delivered").status_code == 200
    assert rig.status_callback(account, sent["sid"], "sent").status_code == 200  # late and out of order
    delivered = rig.message(room["id"], queued["id"])
    assert (delivered["status"], delivered["delivery_status"]) == ("done", "delivered")
    updates = [e for e in rig.events() if e.type == 5 and e.message.id == queued["id"]]  # message_updated
    assert [(e.message.status, e.message.delivery_status) for e in updates] == [(2, 1), (2, 2), (2, 3)]


def test_a_forged_status_callback_changes_nothing(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    done = rig.wait_message(rig.send(_room(rig, account, peer)["id"]))
    sid = done["transaction_id"]
    forged = rig.hook(account, {"MessageSid": sid, "MessageStatus": "failed"}, suffix="/status", token="wrong")
    assert forged.status_code == 401
    assert rig.message(done["conversation_id"], done["id"])["delivery_status"] == "queued"


def test_an_undelivered_receipt_keeps_twilios_error_code(rig: Rig) -> None:
    account = rig.twilio_account()
    done = rig.wait_message(rig.send(_room(rig, account, new_number())["id"]))
    r = rig.status_callback(account, done["transaction_id"], "undelivered", ErrorCode="30003")
    assert r.status_code == 200
    after = rig.message(done["conversation_id"], done["id"])
    assert (after["status"], after["delivery_status"], after["error_code"]) == ("done", "undelivered", "30003")


def test_media_goes_out_as_repeated_media_urls(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    medias = [
        {"type": "image", "url": "https://cdn.example.test/a.png", "mime_type": "image/png"},
        {"type": "image", "url": "https://cdn.example.test/b.png", "mime_type": "image/png"},
    ]
    done = rig.wait_message(rig.send(room["id"], "", medias=medias))
    assert done["status"] == "done", done
    [sent] = rig.standin.sent_to(peer)
    assert sent["media_urls"] == ["https://cdn.example.test/a.png", "https://cdn.example.test/b.png"]
    assert sent["body"] == ""


def test_a_provider_outage_is_retried_until_it_recovers(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    rig.standin.script(peer, Behaviour(503, 20500, "Service Unavailable"), Behaviour(500, 20500, "Internal"))
    done = rig.wait_message(rig.send(room["id"], "after the outage"))
    assert done["status"] == "done", done
    assert rig.standin.posts[peer] == 3
    assert len(rig.standin.sent_to(peer)) == 1


def test_429_is_retried_no_sooner_than_retry_after(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    rig.standin.script(peer, Behaviour(429, retry_after="1"))
    queued = rig.send(room["id"], "rate limited")
    done = rig.wait_message(queued)
    assert done["status"] == "done", done
    assert rig.standin.posts[peer] == 2
    [sent] = rig.standin.sent_to(peer)
    waited = sent["_created"] - _seconds(queued["tm_create"])
    assert waited >= 0.9, waited  # the backoff alone (at most 0.2 s here) would have retried sooner


def test_a_hanging_provider_times_out_and_is_retried(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    rig.standin.script(peer, Behaviour(503, 20500, "hang then fail", hang=2.5))
    done = rig.wait_message(rig.send(room["id"], "slow"))
    assert done["status"] == "done", done
    assert rig.standin.posts[peer] == 2


def test_a_4xx_fails_at_once_keeping_twilios_code_and_message(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    rig.standin.script(peer, Behaviour(400, 21610, "Attempt to send to unsubscribed recipient"))
    failed = rig.wait_message(rig.send(room["id"], "hello?"))
    assert (failed["status"], failed["delivery_status"]) == ("failed", "failed")
    assert (failed["error_code"], failed["error_message"]) == ("21610", "Attempt to send to unsubscribed recipient")
    assert rig.standin.posts[peer] == 1
    assert rig.event_types()[-1] == "conversation_message_updated"


def test_retries_are_bounded(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    rig.standin.script(peer, *[Behaviour(503, 20500, "down")] * 6)
    failed = rig.wait_message(rig.send(room["id"], "never"))
    assert (failed["status"], failed["error_code"]) == ("failed", "20500")
    assert rig.standin.posts[peer] == 4  # CONVHUB_DELIVERY_MAX_ATTEMPTS in the rig


def test_wrong_credentials_fail_with_twilios_auth_error(rig: Rig) -> None:
    account = rig.twilio_account()
    room = _room(rig, account, new_number())
    r = rig.rest.put(
        f"/v1.0/conversation_accounts/{account['id']}",
        json={"credentials": {"account_sid": account["sid"], "auth_token": "wrong"}},
    )
    assert r.status_code == 200
    failed = rig.wait_message(rig.send(room["id"], "x"))
    assert (failed["status"], failed["error_code"], failed["error_message"]) == ("failed", "20003", "Authenticate")


def test_request_id_makes_a_retried_send_return_the_first_message(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    first = rig.send(room["id"], "once", request_id="order-42-shipped")
    second = rig.send(room["id"], "once", request_id="order-42-shipped")
    assert second["id"] == first["id"]
    rig.wait_message(first)
    assert len(rig.standin.sent_to(peer)) == 1
    assert len(rig.jobs()) == 1


def test_no_usable_account_is_failed_precondition_naming_why(rig: Rig) -> None:
    account = rig.twilio_account()
    room = _room(rig, account, new_number())
    r = rig.rest.put(f"/v1.0/conversation_accounts/{account['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    refused = rig.rest.post(f"/v1.0/conversations/{room['id']}/messages", json={"text": "hi"})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION"
    assert f"no enabled account with address {account['number']}" in error["message"]
    assert len(rig.messages(room["id"])) == 1 and rig.jobs() == []


def test_content_rules_refuse_long_text_for_sms(rig: Rig) -> None:
    account = rig.twilio_account()
    room = _room(rig, account, new_number())
    refused = rig.rest.post(f"/v1.0/conversations/{room['id']}/messages", json={"text": "x" * 1601})
    assert refused.status_code == 400
    assert "SMS takes at most 1,600" in refused.json()["error"]["message"]
    ok = rig.send(room["id"], "x" * 1600)
    assert rig.wait_message(ok)["status"] == "done"


def test_sending_into_a_closed_conversation_is_refused(rig: Rig) -> None:
    account = rig.twilio_account()
    room = _room(rig, account, new_number())
    assert rig.rest.post(f"/v1.0/conversations/{room['id']}:close", json={}).status_code == 200
    refused = rig.rest.post(f"/v1.0/conversations/{room['id']}/messages", json={"text": "late"})
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["reason"] == "CONVERSATION_CLOSED"


def _seconds(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
