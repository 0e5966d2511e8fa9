"""VoIPBIN parity, issue 12 item 9: the media object, `dialog_id`, address `name` and `detail`.

Schema facts copied by hand from VoIPBIN's Go structs as test data:
`bin-conversation-manager/models/media` (Identity `id`, `customer_id`; `type`
from its enum; `filename`; `tm_create`/`tm_update`/`tm_delete` as nullable
times), `models/conversation` (`dialog_id`: for LINE the groupId/roomId, else
the userId — `linehandler.getDialogID`) and `bin-common-handler/models/address`
(`name`, `detail`). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from test_voipbin_parity import NIL_UUID, UUID_RE, check_error, violated_field

MEDIA_TYPES = {"image", "video", "audio", "file", "location", "sticker", "template", "imagemap", "flex"}
MEDIA_KEYS = {"id", "customer_id", "type", "filename", "tm_create", "tm_update", "tm_delete"}


def ingest(rest: httpx.Client, **body: Any) -> httpx.Response:
    payload = {
        "channel": "message",
        "self": {"type": "tel", "target": "+15559990000"},
        "peer": {"type": "tel", "target": "+1555" + str(uuid.uuid4().int)[:7]},
        "text": "hello",
        **body,
    }
    return rest.post("/v1.0/conversation_messages:ingest", json=payload)


def only_message(rest: httpx.Client, conversation_id: str) -> dict[str, Any]:
    listed = rest.get(f"/v1.0/conversations/{conversation_id}/messages").json()["result"]
    assert len(listed) == 1
    message: dict[str, Any] = listed[0]
    return message


def check_media(media: dict[str, Any]) -> None:
    assert set(media) >= MEDIA_KEYS, media
    assert UUID_RE.fullmatch(media["id"]) and UUID_RE.fullmatch(media["customer_id"]), media
    assert media["type"] in MEDIA_TYPES
    assert media["tm_create"] is None and media["tm_update"] is None and media["tm_delete"] is None


def test_voipbins_media_object_is_accepted_and_given_back(rest: httpx.Client) -> None:
    media_id = str(uuid.uuid4())
    voipbin_media = {
        "id": media_id,
        "customer_id": NIL_UUID,
        "type": "image",
        "filename": "receipt.png",
        "tm_create": "2024-01-02 03:04:05.000000",
        "tm_update": None,
        "tm_delete": None,
    }
    r = ingest(rest, medias=[voipbin_media, {"url": "https://cdn.example.com/a.gif", "mime_type": "image/gif"}])
    assert r.status_code == 200, r.text
    kept, linked = only_message(rest, r.json()["conversation"]["id"])["medias"]
    check_media(kept)
    assert (kept["id"], kept["type"], kept["filename"]) == (media_id, "image", "receipt.png")
    assert kept["url"] == f"/v1.0/media/{media_id}"  # the id names a media convhub keeps
    check_media(linked)
    assert (linked["id"], linked["type"]) == (NIL_UUID, "image")  # no kept media; the type from the MIME family
    assert linked["url"] == "https://cdn.example.com/a.gif"


def test_a_url_given_with_an_id_wins(rest: httpx.Client) -> None:
    r = ingest(rest, medias=[{"id": str(uuid.uuid4()), "url": "https://cdn.example.com/b.mp4", "type": "video"}])
    assert r.status_code == 200, r.text
    (media,) = only_message(rest, r.json()["conversation"]["id"])["medias"]
    assert media["url"] == "https://cdn.example.com/b.mp4" and media["id"] == NIL_UUID and media["type"] == "video"


def test_bad_media_objects_are_400_naming_the_field(rest: httpx.Client) -> None:
    cases = [
        ({"id": "not-a-uuid", "type": "image"}, "medias[0].id"),
        ({"id": str(uuid.uuid4()), "type": "gif"}, "medias[0].type"),
        ({"id": str(uuid.uuid4()), "customer_id": 7}, "medias[0].customer_id"),
        ({"id": str(uuid.uuid4()), "tm_create": 5}, "medias[0].tm_create"),
        ({"id": NIL_UUID, "type": "image"}, "medias[0].url"),  # the nil UUID names nothing
    ]
    for media, field in cases:
        err = check_error(ingest(rest, medias=[media]), 400, "INVALID_ARGUMENT")
        assert violated_field(err) == field, (media, err)


def test_address_name_fills_target_name_and_detail_is_accepted(rest: httpx.Client) -> None:
    peer = "+1555" + str(uuid.uuid4().int)[:7]
    r = ingest(rest, peer={"type": "tel", "target": peer, "name": "Alice", "detail": "VIP customer"})
    assert r.status_code == 200, r.text
    conversation = r.json()["conversation"]
    assert conversation["peer"]["target_name"] == "Alice"
    assert "detail" not in conversation["peer"]
    other = "+1555" + str(uuid.uuid4().int)[:7]
    r = ingest(rest, peer={"type": "tel", "target": other, "name": "Alias", "target_name": "Bob"})
    assert r.status_code == 200 and r.json()["conversation"]["peer"]["target_name"] == "Bob"
    err = check_error(ingest(rest, peer={"type": "tel", "target": other, "detail": 3}), 400, "INVALID_ARGUMENT")
    assert violated_field(err) == "peer.detail"


def test_dialog_id_is_the_line_chat_and_empty_for_sms(rest: httpx.Client) -> None:
    group = "C" + uuid.uuid4().hex
    line_body = {
        "channel": "line",
        "self": {"type": "line", "target": "U" + uuid.uuid4().hex},
        "peer": {"type": "line", "target": group},
    }
    r = ingest(rest, **line_body)
    assert r.status_code == 200, r.text
    conversation = r.json()["conversation"]
    assert conversation["dialog_id"] == group
    assert rest.get(f"/v1.0/conversations/{conversation['id']}").json()["dialog_id"] == group
    listed = rest.get("/v1.0/conversations", params={"type": "line"}).json()["result"]
    assert [c["dialog_id"] for c in listed] == [group]
    r = ingest(rest)
    assert r.status_code == 200 and r.json()["conversation"]["dialog_id"] == ""


def test_the_openapi_document_describes_the_voipbin_keys(base: str) -> None:
    schemas = httpx.get(f"{base}/v1.0/openapi.json", timeout=10).json()["components"]["schemas"]
    media = next(s for name, s in schemas.items() if name.endswith("Media"))
    assert set(media["properties"]) >= MEDIA_KEYS | {"url"}
    assert set(media["properties"]["type"]["enum"]) == MEDIA_TYPES | {""}
    assert media["anyOf"] == [{"required": ["url"]}, {"required": ["id"]}]
    address = next(s for name, s in schemas.items() if name.endswith("Address"))
    assert address["properties"]["name"]["writeOnly"] and address["properties"]["detail"]["writeOnly"]
