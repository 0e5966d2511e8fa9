"""Twilio's inbound hook against the real server: signed by the official SDK, verified, ingested once."""

from __future__ import annotations

import uuid

from tests.channel_rig import PUBLIC_URL, Rig, new_number


def test_a_signed_inbound_sms_opens_a_room_and_writes_its_events(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    r = rig.inbound(account, peer, "Hi, is my order ready?", sid="SM" + "a" * 32)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    assert r.text.endswith("<Response/>")
    [room] = rig.conversations()
    assert (room["type"], room["self"]["target"], room["peer"]["target"]) == ("message", account["number"], peer)
    assert room["account_id"] == account["id"]
    [message] = rig.messages(room["id"])
    assert (message["direction"], message["text"], message["transaction_id"]) == (
        "incoming",
        "Hi, is my order ready?",
        "SM" + "a" * 32,
    )
    assert message["account_id"] == account["id"]
    assert rig.event_types()[-4:] == [
        "conversation_created",
        "participant_added",
        "conversation_message_created",
        "conversation_message_received",
    ]


def test_a_redelivered_hook_answers_200_and_stores_nothing_new(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    assert rig.inbound(account, peer, "once", sid="SM" + "b" * 32).status_code == 200
    events = len(rig.events())
    again = rig.inbound(account, peer, "once", sid="SM" + "b" * 32)
    assert again.status_code == 200 and again.text.endswith("<Response/>")
    [room] = rig.conversations()
    assert len(rig.messages(room["id"])) == 1
    assert len(rig.events()) == events


def test_inbound_media_is_fetched_with_the_accounts_credentials_into_the_media_store(rig: Rig) -> None:
    """MediaUrlN needs basic auth and redirects to a CDN that refuses credentials (twilio_standin.py)."""
    account = rig.twilio_account()
    photo, pdf = b"\x89PNG fake picture", b"%PDF-1.7 fake"
    urls = [rig.standin.add_media(account["sid"], photo, "image/png")]
    urls.append(rig.standin.add_media(account["sid"], pdf, "application/pdf"))
    r = rig.inbound(
        account,
        new_number(),
        "look",
        NumMedia="2",
        MediaUrl0=urls[0],
        MediaContentType0="image/png",
        MediaUrl1=urls[1],
        MediaContentType1="application/pdf",
    )
    assert r.status_code == 200, r.text
    [room] = rig.conversations()
    [message] = rig.messages(room["id"])
    assert message["error_code"] == "" and message["error_message"] == ""
    assert [rig.standin.media_fetches[url.rsplit("/", 1)[1]] for url in urls] == [1, 1]
    assert [(m["type"], m["mime_type"], m["size"]) for m in message["medias"]] == [
        ("image", "image/png", str(len(photo))),
        ("file", "application/pdf", str(len(pdf))),  # int64: a JSON string
    ]
    for media, data in zip(message["medias"], (photo, pdf), strict=True):
        assert media["url"].startswith(PUBLIC_URL + "/v1.0/media/")
        path = media["url"].removeprefix(PUBLIC_URL)
        assert media["id"] == path.rsplit("/", 1)[1]  # VoIPBIN's media id is the kept media's
        got = rig.rest.get(path)
        assert got.status_code == 200 and got.content == data and got.headers["content-type"] == media["mime_type"]
        assert rig.anonymous.get(path).status_code == 401


def test_credentials_go_only_to_twilios_api_origin(rig: Rig) -> None:
    """A MediaUrl on another host (here the CDN itself, which refuses `Authorization`) is fetched without them."""
    account = rig.twilio_account()
    api_url = rig.standin.add_media(account["sid"], b"elsewhere", "image/png")
    direct = api_url.replace("127.0.0.1", "localhost").split("/2010-04-01/")[0] + "/cdn/" + api_url.rsplit("/", 1)[1]
    r = rig.inbound(account, new_number(), "cdn", NumMedia="1", MediaUrl0=direct, MediaContentType0="image/png")
    assert r.status_code == 200, r.text
    [room] = rig.conversations()
    [message] = rig.messages(room["id"])
    assert message["error_code"] == "", message["error_message"]
    assert rig.rest.get(message["medias"][0]["url"].removeprefix(PUBLIC_URL)).content == b"elsewhere"


def test_a_media_that_cannot_be_fetched_keeps_the_message_with_its_url_and_the_error(rig: Rig) -> None:
    account = rig.twilio_account()
    good = rig.standin.add_media(account["sid"], b"GIF89a", "image/gif")
    gone = good.rsplit("/", 1)[0] + "/ME" + "0" * 32  # Twilio answers 404
    other_account = rig.standin.new_account()[0]
    foreign = rig.standin.add_media(other_account, b"not yours", "image/gif")  # 401 with this account's token
    r = rig.inbound(
        account,
        new_number(),
        "three pictures",
        NumMedia="3",
        MediaUrl0=good,
        MediaContentType0="image/gif",
        MediaUrl1=gone,
        MediaContentType1="image/jpeg",
        MediaUrl2=foreign,
        MediaContentType2="image/gif",
    )
    assert r.status_code == 200, r.text
    [room] = rig.conversations()
    [message] = rig.messages(room["id"])
    assert message["text"] == "three pictures"
    kept, lost, refused = message["medias"]
    assert kept["url"].startswith(PUBLIC_URL + "/v1.0/media/") and kept["size"] == "6"
    assert (lost["url"], lost["mime_type"], lost["type"]) == (gone, "image/jpeg", "image")
    assert refused["url"] == foreign
    assert message["error_code"] == "media_not_fetched"
    assert "MediaUrl1: Twilio answered 404" in message["error_message"]
    assert "MediaUrl2: Twilio answered 401" in message["error_message"]


def test_a_redelivered_mms_stores_nothing_new(rig: Rig) -> None:
    account = rig.twilio_account()
    url = rig.standin.add_media(account["sid"], b"picture", "image/png")
    sid = "SM" + "d" * 32
    for _ in range(2):
        r = rig.inbound(account, "+15550007777", "pic", sid=sid, NumMedia="1", MediaUrl0=url)
        assert r.status_code == 200, r.text
    [room] = rig.conversations()
    [message] = rig.messages(room["id"])
    assert rig.rest.get(message["medias"][0]["url"].removeprefix(PUBLIC_URL)).content == b"picture"


def test_forged_missing_and_stale_signatures_answer_401_and_store_nothing(rig: Rig) -> None:
    account = rig.twilio_account()
    params = {"MessageSid": "SM" + "c" * 32, "From": new_number(), "To": account["number"], "Body": "hi"}
    forged = rig.hook(account, params, token="not-the-auth-token")
    assert forged.status_code == 401, forged.text
    assert forged.json()["error"]["status"] == "UNAUTHENTICATED"
    missing = rig.hook(account, params, signature="")
    assert missing.status_code == 401
    # Stale: signed with the auth token the account had before it was rotated.
    old_token = account["token"]
    _sid, new_token = rig.standin.new_account()
    r = rig.rest.put(
        f"/v1.0/conversation_accounts/{account['id']}",
        json={"credentials": {"account_sid": account["sid"], "auth_token": new_token}},
    )
    assert r.status_code == 200, r.text
    assert rig.hook(account, params, token=old_token).status_code == 401
    # Signed over another URL (a replay to a different account's path) fails too.
    other = rig.twilio_account()
    replay = rig.hook(other, params, token=other["token"], signature=None)
    assert replay.status_code == 200  # sanity: the same body, rightly signed for `other`, is accepted there
    moved = rig.anonymous.post(
        f"/v1.0/hooks/twilio/{account['id']}",
        data=params,
        headers={"X-Twilio-Signature": _signature(other["token"], f"/v1.0/hooks/twilio/{other['id']}", params)},
    )
    assert moved.status_code == 401
    assert all(c["account_id"] != account["id"] for c in rig.conversations())


def test_a_tampered_body_fails_the_signature(rig: Rig) -> None:
    account = rig.twilio_account()
    params = {"MessageSid": "SM" + "d" * 32, "From": new_number(), "To": account["number"], "Body": "pay 10"}
    signature = _signature(account["token"], f"/v1.0/hooks/twilio/{account['id']}", params)
    tampered = {**params, "Body": "pay 1000"}
    r = rig.anonymous.post(
        f"/v1.0/hooks/twilio/{account['id']}", data=tampered, headers={"X-Twilio-Signature": signature}
    )
    assert r.status_code == 401
    assert rig.conversations() == []


def test_malformed_payloads_answer_400_naming_the_field(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    no_from = rig.hook(account, {"MessageSid": "SM" + "e" * 32, "To": account["number"], "Body": "x"})
    assert no_from.status_code == 400
    assert no_from.json()["error"]["details"][1]["field_violations"][0]["field"] == "From"
    bad_media = rig.inbound(account, peer, "x", NumMedia="1")
    assert bad_media.status_code == 400
    assert "MediaUrl0" in bad_media.json()["error"]["message"]
    bad_number = rig.inbound(account, "not a number", "x")
    assert bad_number.status_code == 400
    assert "peer.target" in bad_number.json()["error"]["message"]
    json_body = rig.anonymous.post(f"/v1.0/hooks/twilio/{account['id']}", json={"From": peer})
    assert json_body.status_code == 400
    assert rig.conversations() == []


def test_unknown_deleted_and_other_providers_accounts_answer_404(rig: Rig) -> None:
    account = rig.twilio_account()
    params = {"MessageSid": "SM" + "f" * 32, "From": new_number(), "To": account["number"], "Body": "x"}
    unknown = dict(account, id=str(uuid.uuid4()))
    assert rig.hook(unknown, params).status_code == 404
    assert rig.anonymous.post("/v1.0/hooks/twilio/not-a-uuid", data=params).status_code == 404
    line = rig.rest.post("/v1.0/conversation_accounts", json={"type": "line", "secret": "s", "token": "t"}).json()
    assert rig.hook(dict(account, id=line["id"]), params).status_code == 404
    assert rig.rest.delete(f"/v1.0/conversation_accounts/{account['id']}").status_code == 200
    assert rig.hook(account, params).status_code == 404
    assert rig.conversations() == []


def test_the_signature_covers_the_public_url_not_the_listen_address(rig: Rig) -> None:
    account = rig.twilio_account()
    params = {"MessageSid": "SM" + "1" * 32, "From": new_number(), "To": account["number"], "Body": "x"}
    path = f"/v1.0/hooks/twilio/{account['id']}"
    from twilio.request_validator import RequestValidator

    local = RequestValidator(account["token"]).compute_signature(rig.hub.http_base + path, params)
    assert rig.hook(account, params, signature=local).status_code == 401
    assert PUBLIC_URL.startswith("https://")
    assert rig.hook(account, params).status_code == 200


def _signature(token: str, path: str, params: dict[str, str]) -> str:
    from twilio.request_validator import RequestValidator

    signature: str = RequestValidator(token).compute_signature(PUBLIC_URL + path, params)
    return signature
