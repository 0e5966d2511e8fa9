"""Kept media sent out: a VoIPBIN client names it by `id`, the provider gets a signed link it can fetch
(channels/media_links.py), over a real server and the Twilio stand-in."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from convhub.server.channels.media_links import MediaLinks
from tests.channel_rig import PUBLIC_URL, Rig, new_number


def test_a_kept_media_named_by_id_goes_out_as_a_signed_link_the_provider_can_fetch(rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    picture = b"\x89PNG the customer's picture"
    url = rig.standin.add_media(account["sid"], picture, "image/png")
    r = rig.inbound(account, peer, "my receipt", NumMedia="1", MediaUrl0=url, MediaContentType0="image/png")
    assert r.status_code == 200, r.text
    [room] = rig.conversations()
    [inbound] = rig.messages(room["id"])
    media_id = inbound["medias"][0]["id"]

    voipbin_media = {"id": media_id, "type": "image", "filename": "receipt.png", "tm_create": None}
    external = {"url": "https://cdn.example.com/logo.png", "type": "image"}
    sent = rig.send(room["id"], "Thanks, here it is back", medias=[voipbin_media, external])
    assert rig.wait_message(sent)["status"] == "done"
    [posted] = rig.standin.sent_to(peer)
    signed, untouched = posted["media_urls"]
    assert untouched == "https://cdn.example.com/logo.png"
    parts = urlsplit(signed)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL and parts.path == f"/v1.0/media/{media_id}"
    assert set(parse_qs(parts.query)) == {"customer", "expires", "signature"}

    fetched = rig.anonymous.get(f"{parts.path}?{parts.query}")  # as the provider would, without a token
    assert fetched.status_code == 200 and fetched.content == picture
    query = parse_qs(parts.query)
    forged = {**{k: v[0] for k, v in query.items()}, "signature": "A" * 43}
    assert rig.anonymous.get(parts.path, params=forged).status_code == 401
    cid = rig.tenant.customer_id
    other_customer = {**{k: v[0] for k, v in query.items()}, "customer": cid[:-1] + ("1" if cid[-1] == "0" else "0")}
    assert rig.anonymous.get(parts.path, params=other_customer).status_code == 401
    assert rig.anonymous.get(parts.path).status_code == 401  # no token, no link: as before


def test_links_expire_and_only_kept_media_are_rewritten() -> None:
    links = MediaLinks(b"k" * 32, "https://hub.example.com/")
    media_id = "0f512bda-ae1e-4597-8e11-e5f5686b97d3"
    url = links.sign("cust", media_id, now=1_000)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert links.verify("cust", media_id, query["expires"], query["signature"], now=1_000 + links.ttl - 1)
    assert not links.verify("cust", media_id, query["expires"], query["signature"], now=1_000 + links.ttl + 1)
    assert not links.verify("other", media_id, query["expires"], query["signature"], now=1_000)
    assert not MediaLinks(b"x" * 32, "https://hub.example.com").verify(
        "cust", media_id, query["expires"], query["signature"], now=1_000
    )
    for kept in (f"/v1.0/media/{media_id}", f"https://hub.example.com/v1.0/media/{media_id}"):
        assert links.kept_media_id(kept) == media_id
    for other in (f"https://evil.example/v1.0/media/{media_id}", "/v1.0/media/not-a-uuid", "https://cdn/x.png"):
        assert links.kept_media_id(other) is None
