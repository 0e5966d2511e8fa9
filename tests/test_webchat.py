"""Web chat: widget keys, visitor sessions and tokens, the visitor's post and stream, and sending to a visitor.

Against the real server (SQLite and PostgreSQL) over loopback: visitors
speak REST/SSE like the widget page does, the internal service speaks gRPC.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from convhub.v1 import account_pb2, account_service_pb2, conversation_service_pb2, message_pb2
from tests.conftest import Hub, Tenant
from tests.support import Api
from tests.webchat_support import (
    VisitorStream,
    create_webchat_account,
    open_session,
    post_text,
    start_chat,
)


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


@pytest.fixture
def http(hub: Hub) -> Iterator[httpx.Client]:
    assert hub.http_base is not None
    with httpx.Client(base_url=hub.http_base, timeout=30) as client:
        yield client


def _messages(api: Api, conversation_id: str) -> list[message_pb2.Message]:
    response = api.conversations.ListMessages(
        conversation_service_pb2.ListMessagesRequest(conversation_id=conversation_id)
    )
    return list(response.result)


def _send(api: Api, conversation_id: str, text: str) -> message_pb2.Message:
    return api.conversations.SendMessage(
        conversation_service_pb2.SendMessageRequest(conversation_id=conversation_id, text=text)
    )


def test_webchat_account_has_a_readable_widget_key_and_a_write_only_signing_secret(
    api: Api, http: httpx.Client, tenant: Tenant
) -> None:
    account = create_webchat_account(api.accounts)
    assert account.provider == "webchat"
    assert account.widget_key.startswith("wk_") and len(account.widget_key) > 20
    assert account.address.target == account.id  # web chat accounts get an address of their own
    again = http.get(f"/v1.0/conversation_accounts/{account.id}", headers={"authorization": f"Bearer {tenant.token}"})
    assert again.status_code == 200
    assert again.json()["widget_key"] == account.widget_key
    assert "signing_secret" not in again.text and "credentials" not in again.json()
    other = create_webchat_account(api.accounts)
    assert other.widget_key != account.widget_key


def _conversation_ids(api: Api) -> list[str]:
    listed = api.conversations.ListConversations(conversation_service_pb2.ListConversationsRequest())
    return [c.id for c in listed.result]


def test_the_first_message_opens_the_visitors_conversation_and_a_returning_visitor_keeps_it(
    api: Api, http: httpx.Client
) -> None:
    account = create_webchat_account(api.accounts)
    opened = open_session(http, account.widget_key)
    assert opened.conversation_id == ""  # a page view alone opens no conversation (nor sends a webhook)
    assert _conversation_ids(api) == []
    back_early = open_session(http, account.widget_key, returning=opened.token)
    assert (back_early.visitor_id, back_early.conversation_id) == (opened.visitor_id, "")
    posted = post_text(http, opened, "hello")
    assert posted.status_code == 201
    first = posted.json()
    assert first["visitor_id"] == opened.visitor_id and first["visitor_token"] != opened.token
    assert _conversation_ids(api) == [first["conversation_id"]]
    conversation = api.conversations.GetConversation(
        conversation_service_pb2.GetConversationRequest(id=first["conversation_id"])
    )
    assert conversation.peer.target == opened.visitor_id
    assert conversation.self.target == account.address.target
    for token in (opened.token, first["visitor_token"]):  # the pre-message token returns to it too
        back = open_session(http, account.widget_key, returning=token)
        assert (back.visitor_id, back.conversation_id) == (opened.visitor_id, first["conversation_id"])
    stranger = open_session(http, account.widget_key)
    assert stranger.visitor_id != opened.visitor_id and stranger.conversation_id == ""
    # Another account's token does not make its visitor return here: a new visitor instead.
    elsewhere = open_session(http, create_webchat_account(api.accounts).widget_key, returning=first["visitor_token"])
    assert elsewhere.visitor_id != opened.visitor_id


def test_visitor_posts_land_in_its_conversation_and_an_internal_answer_reaches_its_stream(
    api: Api, http: httpx.Client, hub: Hub
) -> None:
    account = create_webchat_account(api.accounts)
    session = start_chat(http, account.widget_key, "where is my order #5678?")
    stream = VisitorStream(hub.http_base or "", session.token)
    try:
        (seen,) = stream.take(1)  # the history: the message that opened the conversation
        assert seen.event == "message"
        assert seen.data["text"] == "where is my order #5678?" and seen.data["sender"] == "visitor"
        # The page gets only what it shows: no addresses, accounts or delivery internals.
        assert set(seen.data) == {"id", "sender", "text", "tm_create"}
        stored = _messages(api, session.conversation_id)
        assert [m.text for m in stored] == ["where is my order #5678?"]
        assert stored[0].direction == message_pb2.MESSAGE_DIRECTION_INCOMING
        assert stored[0].source.target == session.visitor_id

        answer = _send(api, session.conversation_id, "it ships tomorrow")
        (reply,) = stream.take(1)
        assert reply.data == {**reply.data, "id": answer.id, "sender": "agent", "text": "it ships tomorrow"}
        assert int(reply.id) > int(seen.id)
        posted = post_text(http, session, "thanks")
        assert posted.json()["conversation_id"] == session.conversation_id
        assert "visitor_token" not in posted.json()  # same conversation: the token stays
        (again,) = stream.take(1)
        assert (again.data["text"], again.data["sender"]) == ("thanks", "visitor")
    finally:
        stream.close()
    deadline = time.monotonic() + 20
    while True:  # the web chat adapter marks it sent once committed (the visitor reads it over SSE)
        sent = api.conversations.GetMessage(
            conversation_service_pb2.GetMessageRequest(conversation_id=session.conversation_id, id=answer.id)
        )
        if sent.delivery_status == message_pb2.DELIVERY_STATUS_SENT or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sent.delivery_status == message_pb2.DELIVERY_STATUS_SENT
    assert sent.status == message_pb2.MESSAGE_STATUS_DONE
    assert sent.transaction_id == answer.id


def test_the_stream_replays_history_and_resumes_after_last_event_id(api: Api, http: httpx.Client, hub: Hub) -> None:
    account = create_webchat_account(api.accounts)
    session = start_chat(http, account.widget_key, "one")
    for text in ("two", "three"):
        assert post_text(http, session, text).status_code == 201
    history = VisitorStream(hub.http_base or "", session.token)
    try:
        frames = history.take(3)
    finally:
        history.close()
    assert [f.data["text"] for f in frames] == ["one", "two", "three"]
    resumed = VisitorStream(hub.http_base or "", session.token, headers={"last-event-id": frames[0].id})
    try:
        assert [f.data["text"] for f in resumed.take(2)] == ["two", "three"]
        assert resumed.quiet(0.5) == []
    finally:
        resumed.close()


def test_a_token_for_one_conversation_cannot_read_or_write_another(api: Api, http: httpx.Client, hub: Hub) -> None:
    account = create_webchat_account(api.accounts)
    alice = start_chat(http, account.widget_key, "alice here")
    bob = start_chat(http, account.widget_key, "bob's secret")
    stream = VisitorStream(hub.http_base or "", alice.token)
    try:
        (frame,) = stream.take(1)
        assert frame.data["text"] == "alice here"
        _send(api, bob.conversation_id, "for bob only")
        assert post_text(http, bob, "bob again").status_code == 201
        assert stream.quiet(1.0) == []
    finally:
        stream.close()
    assert [m.text for m in _messages(api, bob.conversation_id)] == ["bob's secret", "for bob only", "bob again"]
    # Alice rewrites her token to name Bob's conversation: the signature no longer holds.
    prefix, payload, mac = alice.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["c"] = bob.conversation_id
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{prefix}.{forged_payload}.{mac}"
    assert (
        http.post(
            "/v1.0/webchat/messages", json={"text": "x"}, headers={"authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    assert VisitorStream(hub.http_base or "", forged).status == 401
    assert [m.text for m in _messages(api, bob.conversation_id)] == ["bob's secret", "for bob only", "bob again"]


def _routes_and_credentials(http: httpx.Client, token: str) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Every authenticated REST route of the gateway (from its OpenAPI document, path variables filled with
    a UUID), and `token` presented in each way the document says an API token may come."""
    document = http.get("/v1.0/openapi.json").json()
    routes = []
    for path, operations in document["paths"].items():
        concrete = path
        while "{" in concrete:
            start = concrete.index("{")
            concrete = concrete[:start] + str(uuid.uuid4()) + concrete[concrete.index("}", start) + 1 :]
        for method, operation in operations.items():
            if method in ("get", "post", "put", "patch", "delete") and operation.get("security") != []:
                routes.append((method.upper(), concrete))
    ways: list[dict[str, Any]] = []
    for scheme in document["components"]["securitySchemes"].values():
        if scheme["type"] == "http":
            ways.append({"headers": {"authorization": f"Bearer {token}"}})
        elif scheme["in"] == "query":
            ways.append({"params": {scheme["name"]: token}})
        elif scheme["in"] == "cookie":
            ways.append({"headers": {"cookie": f"{scheme['name']}={token}"}})
    return routes, ways


def test_a_visitor_token_is_refused_by_every_regular_api_route(api: Api, http: httpx.Client, tenant: Tenant) -> None:
    account = create_webchat_account(api.accounts)
    session = open_session(http, account.widget_key)
    routes, ways = _routes_and_credentials(http, session.token)
    assert len(routes) > 20 and ("GET", "/v1.0/conversations") in routes and len(ways) >= 5
    routes += [("GET", f"/v1.0/media/{uuid.uuid4()}")]
    for method, path in routes:
        for way in ways:
            answer = http.request(method, path, json={}, **way)
            assert answer.status_code in (401, 403), (method, path, way, answer.status_code, answer.text)
    # And the other way round: the visitor routes take no API token.
    api_auth = {"authorization": f"Bearer {tenant.token}"}
    assert http.post("/v1.0/webchat/messages", json={"text": "hi"}, headers=api_auth).status_code == 401
    assert http.get("/v1.0/webchat/events", headers=api_auth).status_code == 401


def _grpc_methods() -> list[tuple[str, type, bool]]:
    """Every RPC of every convhub.v1 service module, new ones included: (path, request class, server-streaming)."""
    import importlib
    import pkgutil

    from google.protobuf import message_factory

    import convhub.v1

    methods = []
    for info in pkgutil.iter_modules(convhub.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"convhub.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request = message_factory.GetMessageClass(method.input_type)
                methods.append((f"/{service.full_name}/{method.name}", request, method.server_streaming))
    return methods


def test_a_visitor_token_is_refused_by_every_grpc_method(api: Api, http: httpx.Client, channel: grpc.Channel) -> None:
    account = create_webchat_account(api.accounts)
    session = open_session(http, account.widget_key)
    metadata = (("authorization", f"Bearer {session.token}"),)
    methods = _grpc_methods()
    assert len(methods) > 15 and "/convhub.v1.EventService/SubscribeEvents" in [m[0] for m in methods]
    for path, request, streaming in methods:
        try:
            if streaming:
                call = channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString())
                next(iter(call(request(), metadata=metadata, timeout=10)))
            else:
                channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString())(
                    request(), metadata=metadata, timeout=10
                )
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (path, err)
        else:
            raise AssertionError(f"{path} accepted a visitor token")


def _field(response: httpx.Response) -> str:
    details = response.json()["error"]["details"]
    return next(v["field"] for d in details for v in d.get("fieldViolations", d.get("field_violations", [])))


def test_bad_visitor_input_is_400_naming_the_field_and_stores_nothing(api: Api, http: httpx.Client) -> None:
    account = create_webchat_account(api.accounts)
    session = open_session(http, account.widget_key)
    sessions = "/v1.0/webchat/sessions"
    cases = [
        (http.post(sessions, json={}), "widget_key"),
        (http.post(sessions, json={"widget_key": 5}), "widget_key"),
        (http.post(sessions, json={"widget_key": ""}), "widget_key"),
        (http.post(sessions, json={"widget_key": "k" * 500}), "widget_key"),
        (http.post(sessions, json={"widget_key": account.widget_key, "visitor_token": ["x"]}), "visitor_token"),
        (http.post(sessions, content=b"{not json"), "body"),
        (http.post(sessions, json=["widget_key"]), "body"),
        (http.post(sessions, content=b" " * 20_000), "body"),
        (http.post("/v1.0/webchat/messages", json={}, headers=session.auth), "text"),
        (http.post("/v1.0/webchat/messages", json={"text": "   "}, headers=session.auth), "text"),
        (http.post("/v1.0/webchat/messages", json={"text": 7}, headers=session.auth), "text"),
        (http.post("/v1.0/webchat/messages", json={"text": "x" * 4097}, headers=session.auth), "text"),
        (
            http.post("/v1.0/webchat/messages", json={"text": "x"}, headers={"authorization": "Basic abc"}),
            "authorization",
        ),
        (
            http.get("/v1.0/webchat/events", params={"visitor_token": session.token}, headers={"last-event-id": "ten"}),
            "Last-Event-ID",
        ),
        (http.get("/v1.0/webchat/events", params={"visitor_token": session.token, "after": "-1"}), "after"),
        (
            http.get(
                "/v1.0/webchat/events", params={"visitor_token": session.token}, headers={"last-event-id": "9" * 15}
            ),
            "Last-Event-ID",
        ),
    ]
    for response, field in cases:
        assert response.status_code == 400, (field, response.status_code, response.text)
        assert _field(response) == field, response.text
    assert http.post(sessions, json={"widget_key": "wk_nobody"}).status_code == 404
    assert _conversation_ids(api) == []  # nothing was stored
    for token in ("", "garbage", "vt1.e30.AAAA", "vt1." + "A" * 2000 + ".x"):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        assert http.post("/v1.0/webchat/messages", json={"text": "x"}, headers=headers).status_code in (400, 401)
    assert http.get("/v1.0/webchat/events", params={"visitor_token": "garbage"}).status_code == 401


def test_a_visitor_posting_too_fast_gets_429_with_retry_after(api: Api, http: httpx.Client) -> None:
    account = create_webchat_account(api.accounts)
    session = open_session(http, account.widget_key)
    neighbour = open_session(http, account.widget_key)
    answers = [post_text(http, session, f"spam {i}") for i in range(14)]  # burst 10, then 1/s
    codes = [a.status_code for a in answers]
    assert codes[:10] == [201] * 10 and 429 in codes[10:], codes
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert post_text(http, neighbour, "hello").status_code == 201  # per visitor, not per account
    stored = len(_messages(api, answers[0].json()["conversation_id"]))
    assert stored == codes.count(201)


def test_the_widget_page_is_served_with_a_strict_csp_and_only_the_public_key(
    api: Api, http: httpx.Client, tenant: Tenant
) -> None:
    account = create_webchat_account(api.accounts)
    page = http.get(f"/webchat/{account.id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert f'data-widget-key="{account.widget_key}"' in page.text
    assert "<script>" not in page.text and "signing_secret" not in page.text
    script = http.get("/webchat/static/widget.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert http.get("/webchat/static/../../etc/passwd").status_code == 404
    assert http.get("/webchat/static/widget.html").status_code == 404
    assert http.get(f"/webchat/{uuid.uuid4()}").status_code == 404
    assert http.get("/webchat/not-a-uuid").status_code == 404
    sms = api.accounts.CreateAccount(
        account_service_pb2.CreateAccountRequest(
            account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name="sms")
        )
    )
    assert http.get(f"/webchat/{sms.id}").status_code == 404  # only web chat accounts have a page
    api.accounts.DeleteAccount(account_service_pb2.DeleteAccountRequest(id=account.id))
    assert http.get(f"/webchat/{account.id}").status_code == 404
    assert http.post("/v1.0/webchat/sessions", json={"widget_key": account.widget_key}).status_code == 404


def test_replacing_credentials_keeps_the_signing_secret_unless_a_new_one_is_given(api: Api, http: httpx.Client) -> None:
    from google.protobuf import field_mask_pb2

    account = create_webchat_account(api.accounts)
    session = open_session(http, account.widget_key)

    def replace_credentials(credentials: dict[str, str]) -> None:
        api.accounts.UpdateAccount(
            account_service_pb2.UpdateAccountRequest(
                account=account_pb2.Account(id=account.id, credentials=credentials),
                update_mask=field_mask_pb2.FieldMask(paths=["credentials"]),
            )
        )

    replace_credentials({"note": "unrelated"})
    assert post_text(http, session, "still me").status_code == 201
    replace_credentials({"signing_secret": "rotated-" + "x" * 40})  # rotation: every visitor token stops verifying
    assert post_text(http, session, "after rotation").status_code == 401
    fresh = open_session(http, account.widget_key, returning=session.token)
    assert fresh.visitor_id != session.visitor_id  # the old token cannot bring the visitor back either
    assert post_text(http, fresh, "new session").status_code == 201
