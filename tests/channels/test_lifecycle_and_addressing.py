"""Conversations that start with us (SendToAddress), close / reopen / the inactivity sweep, fallback, accounts."""

from __future__ import annotations

import time
from typing import Any

from tests.channel_rig import WAIT, Rig, new_number


def _send_to(rig: Rig, body: dict[str, Any]) -> dict[str, Any]:
    r = rig.rest.post("/v1.0/conversations:send", json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_send_to_address_opens_a_room_and_the_peers_reply_lands_in_it(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    first = _send_to(rig, {"account_id": account["id"], "peer": {"target": peer}, "text": "Your appointment is at 3pm"})
    assert first["conversation_created"] is True
    room = first["conversation"]
    assert (room["type"], room["self"]["target"], room["peer"]["target"]) == ("message", account["number"], peer)
    assert rig.wait_message(first["message"])["status"] == "done"
    [sent] = rig.standin.sent_to(peer)
    assert (sent["from"], sent["body"]) == (account["number"], "Your appointment is at 3pm")
    # A second send reuses the open room; the person's reply joins it.
    second = _send_to(
        rig, {"self": {"type": "tel", "target": account["number"]}, "peer": {"target": peer}, "text": "Reminder"}
    )
    assert second["conversation_created"] is False and second["conversation"]["id"] == room["id"]
    assert rig.inbound(account, peer, "See you then!").status_code == 200
    assert [c["id"] for c in rig.conversations()] == [room["id"]]
    assert [m["text"] for m in rig.messages(room["id"])] == ["Your appointment is at 3pm", "Reminder", "See you then!"]
    assert rig.event_types()[:3] == ["account_created", "conversation_created", "participant_added"]


def test_send_to_address_is_idempotent_on_request_id_and_validates(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    body = {"account_id": account["id"], "peer": {"target": peer}, "text": "once", "request_id": "r-1"}
    first, again = _send_to(rig, body), _send_to(rig, body)
    assert again["message"]["id"] == first["message"]["id"] and again["conversation_created"] is False
    rig.wait_message(first["message"])
    assert len(rig.standin.sent_to(peer)) == 1
    no_peer = rig.rest.post("/v1.0/conversations:send", json={"account_id": account["id"], "text": "x"})
    assert no_peer.status_code == 400 and "peer" in no_peer.json()["error"]["message"]
    bad_peer = rig.rest.post(
        "/v1.0/conversations:send", json={"account_id": account["id"], "peer": {"target": "nope"}, "text": "x"}
    )
    assert bad_peer.status_code == 400 and "peer.target" in bad_peer.json()["error"]["message"]
    no_self = rig.rest.post("/v1.0/conversations:send", json={"peer": {"target": peer}, "text": "x"})
    assert no_self.status_code == 400 and "self" in no_self.json()["error"]["message"]
    unknown_self = rig.rest.post(
        "/v1.0/conversations:send",
        json={"self": {"type": "tel", "target": new_number()}, "peer": {"target": peer}, "text": "x"},
    )
    assert unknown_self.status_code == 400
    assert unknown_self.json()["error"]["status"] == "FAILED_PRECONDITION"


def test_close_then_the_next_inbound_opens_a_new_room_and_reopen_needs_the_key_free(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    assert rig.inbound(account, peer, "first").status_code == 200
    [old] = rig.conversations()
    closed = rig.rest.post(f"/v1.0/conversations/{old['id']}:close", json={})
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert rig.rest.post(f"/v1.0/conversations/{old['id']}:close", json={}).json()["state"] == "closed"
    assert rig.inbound(account, peer, "again").status_code == 200
    new = [c for c in rig.conversations() if c["id"] != old["id"]]
    assert len(new) == 1 and new[0]["state"] == "open"
    assert [m["text"] for m in rig.messages(old["id"])] == ["first"]  # history kept
    taken = rig.rest.post(f"/v1.0/conversations/{old['id']}:reopen", json={})
    assert taken.status_code == 400, taken.text
    assert taken.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert rig.rest.post(f"/v1.0/conversations/{new[0]['id']}:close", json={}).status_code == 200
    reopened = rig.rest.post(f"/v1.0/conversations/{old['id']}:reopen", json={})
    assert reopened.status_code == 200 and reopened.json()["state"] == "open"
    assert rig.event_types().count("conversation_updated") == 3
    missing = rig.rest.post("/v1.0/conversations/00000000-0000-4000-8000-000000000000:close", json={})
    assert missing.status_code == 404


def test_an_accounts_inactivity_timeout_closes_its_idle_conversations(rig: Rig) -> None:
    account = rig.twilio_account(inactivity_timeout_seconds=1)
    other = rig.twilio_account()  # no timeout: its rooms stay open
    idle, busy, kept = new_number(), new_number(), new_number()
    for acc, peer in ((account, idle), (account, busy), (other, kept)):
        assert rig.inbound(acc, peer, "hi").status_code == 200
    deadline = time.monotonic() + 0.9
    while time.monotonic() < deadline:  # keep one room active while the other goes idle
        assert rig.inbound(account, busy, "still here").status_code == 200
        time.sleep(0.2)
    rooms = {c["peer"]["target"]: c for c in rig.conversations()}
    assert rooms[busy]["state"] == "open"
    end = time.monotonic() + WAIT
    while rig.rest.get(f"/v1.0/conversations/{rooms[idle]['id']}").json()["state"] != "closed":
        assert time.monotonic() < end, "the sweep never closed the idle room"
        time.sleep(0.1)
    time.sleep(1.5)
    assert rig.rest.get(f"/v1.0/conversations/{rooms[busy]['id']}").json()["state"] == "closed"
    assert rig.rest.get(f"/v1.0/conversations/{rooms[kept]['id']}").json()["state"] == "open"
    closings = [e for e in rig.events() if e.type == 2 and e.conversation.state == 2]  # updated -> closed
    assert sorted(e.conversation.id for e in closings) == sorted([rooms[idle]["id"], rooms[busy]["id"]])


def test_voipbin_account_body_is_accepted_and_credentials_stay_write_only(rig: Rig) -> None:
    body = {"type": "line", "name": "shop", "detail": "LINE official account", "secret": "s3cret", "token": "t0ken"}
    r = rig.rest.post("/v1.0/conversation_accounts", json=body)
    assert r.status_code == 200, r.text
    line = r.json()
    assert (line["type"], line["name"], line["provider"], line["enabled"]) == ("line", "shop", "line", True)
    assert "secret" not in line and "token" not in line and "credentials" not in line
    sid, token = rig.standin.new_account()
    sms = rig.rest.post("/v1.0/conversation_accounts", json={"type": "sms", "secret": sid, "token": token}).json()
    assert sms["provider"] == "twilio"
    for account in (
        rig.rest.get(f"/v1.0/conversation_accounts/{line['id']}").json(),
        *rig.rest.get("/v1.0/conversation_accounts").json()["result"],
    ):
        assert not {"secret", "token", "credentials"} & set(account)
    assert all(b"s3cret" not in e.SerializeToString() and b"t0ken" not in e.SerializeToString() for e in rig.events())
    wrong = rig.rest.post("/v1.0/conversation_accounts", json={"type": "line", "provider": "twilio"})
    assert wrong.status_code == 400 and "account.provider" in wrong.json()["error"]["message"]
    clash = rig.rest.post(
        "/v1.0/conversation_accounts",
        json={"type": "line", "secret": "a", "credentials": {"channel_secret": "b"}},
    )
    assert clash.status_code == 400 and "account.secret" in clash.json()["error"]["message"]


def test_the_voipbin_sms_mapping_secret_is_the_account_sid_and_token_the_auth_token(rig: Rig) -> None:
    sid, token = rig.standin.new_account()
    number = new_number()
    r = rig.rest.post(
        "/v1.0/conversation_accounts",
        json={"type": "sms", "address": {"type": "tel", "target": number}, "secret": sid, "token": token},
    )
    assert r.status_code == 200, r.text
    account = {**r.json(), "sid": sid, "token": token, "number": number}
    peer = new_number()
    assert rig.inbound(account, peer, "hi").status_code == 200  # the hook verifies with the token
    [room] = rig.conversations()
    assert rig.wait_message(rig.send(room["id"], "hello"))["status"] == "done"  # the API call authenticates
    assert rig.standin.sent_to(peer)[0]["account_sid"] == sid


def _line_preferred(rig: Rig) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A room on SMS whose person prefers LINE, where a LINE account exists but cannot deliver in this rig."""
    account = rig.twilio_account()
    peer = new_number()
    assert rig.inbound(account, peer, "hi").status_code == 200
    [room] = rig.conversations()
    r = rig.rest.post(
        "/v1.0/conversation_accounts",
        json={"type": "line", "address": {"type": "line", "target": "@shop"}, "secret": "s", "token": "t"},
    )
    assert r.status_code == 200, r.text
    [person] = rig.rest.get(f"/v1.0/conversations/{room['id']}/participants").json()["result"]
    r = rig.rest.put(
        f"/v1.0/conversations/{room['id']}/participants/{person['id']}",
        json={
            "addresses": [{"type": "tel", "target": peer}, {"type": "line", "target": "U4af4980629"}],
            "preferred_channel": "line",
        },
    )
    assert r.status_code == 200, r.text
    return account, room, peer


def test_with_fallback_allowed_a_failing_channel_moves_to_the_next_eligible_one(rig: Rig) -> None:
    account, room, peer = _line_preferred(rig)
    queued = rig.send(room["id"], "shipped", allow_fallback=True)
    assert (queued["channel"], queued["channel_reason"]) == ("line", "preferred_channel")
    done = rig.wait_message(queued)
    assert (done["status"], done["channel"], done["channel_reason"]) == ("done", "message", "fallback from line")
    assert (done["account_id"], done["destination"]["target"]) == (account["id"], peer)
    [sent] = rig.standin.sent_to(peer)
    assert sent["body"] == "shipped"


def test_without_fallback_a_failing_channel_fails_the_message(rig: Rig) -> None:
    _account, room, peer = _line_preferred(rig)
    failed = rig.wait_message(rig.send(room["id"], "shipped"))
    assert (failed["status"], failed["channel"]) == ("failed", "line")
    assert failed["error_code"]
    assert rig.standin.sent_to(peer) == []
    explicit = rig.wait_message(rig.send(room["id"], "by sms", channel="message"))
    assert (explicit["status"], explicit["channel"], explicit["channel_reason"]) == ("done", "message", "explicit")
