"""Issue 9's "Order Support #5678" story end to end, on a real `convhub serve`: one conversation across channels.

A customer asks by SMS (a signed Twilio hook); support adds the person's
email address and answers by email with the invoice PDF attached (it reaches
the SMTP stand-in); the customer follows up in web chat from a real browser
(support linked the visitor's `webchat:<visitor id>` address to the person
first: a visitor never links itself); support confirms by SMS (it reaches
the Twilio stand-in). All four messages are one conversation, each on its
channel, and ListMessages, SubscribeEvents (replayed from sequence 0) and a
webhook endpoint (signatures checked with `standardwebhooks`) tell the same
history in the same order.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest

from convhub.v1 import common_pb2, event_pb2, event_service_pb2, event_service_pb2_grpc
from tests.channel_rig import Rig, channel_env, close_hub, start_hub
from tests.conftest import BACKENDS, Hub, create_database, new_tenant
from tests.smtp_standin import SmtpStandIn
from tests.test_channel_email import PDF
from tests.test_webchat_browser import WAIT_MS, browser  # noqa: F401 (the module's Chromium fixture)
from tests.twilio_standin import TwilioStandIn
from tests.webhook_receiver import run_receiver, wait_until

CUSTOMER_PHONE = "+15550105678"
CUSTOMER_EMAIL = "alice@mail.example"
QUESTION = "Hi, where is my order #5678?"
ANSWER = "It ships tomorrow; your invoice is attached."
FOLLOW_UP = "Thanks! Can it go to my office address instead?"
CONFIRMATION = "Done: order #5678 now goes to your office."
WAIT = 20.0
CREATED = event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioStandIn]:
    server = TwilioStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpStandIn]:
    server = SmtpStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def invoice_url() -> Iterator[str]:
    """The shop's invoice, served over HTTP on loopback: support attaches it by URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/invoices/5678.pdf" else 404)
            self.send_header("content-type", "application/pdf")
            self.send_header("content-length", str(len(PDF)))
            self.end_headers()
            self.wfile.write(PDF)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/invoices/5678.pdf"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module", params=BACKENDS)
def story_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, twilio: TwilioStandIn
) -> Iterator[Hub]:
    tmp_dir = tmp_path_factory.mktemp(f"story-{request.param}")
    env = channel_env(
        twilio,
        CONVHUB_PROVIDER_TIMEOUT="5",
        CONVHUB_DELIVERY_LEASE="20",
        CONVHUB_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
    )
    for url in create_database(request.param, tmp_dir):
        hub = start_hub(request.param, url, tmp_dir, env)
        try:
            yield hub
        finally:
            close_hub(hub)


def created(rig: Rig, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = rig.rest.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def add_address(rig: Rig, person: dict[str, Any], address: dict[str, str]) -> dict[str, Any]:
    """Support (API token) adds an address to the person: PATCH with the whole list under an update mask."""
    response = rig.rest.patch(
        f"/v1.0/conversations/{person['conversation_id']}/participants/{person['id']}",
        params={"updateMask": "addresses"},
        json={"addresses": [*({"type": a["type"], "target": a["target"]} for a in person["addresses"]), address]},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def sent(rig: Rig, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Support's SendMessage over REST, waited on until delivered (`done`)."""
    message = created(rig, f"/v1.0/conversations/{conversation_id}/messages", body)
    done = rig.wait_message(message)
    assert done["status"] == "done", done
    return done


def subscribed_history(hub: Hub, rig: Rig, conversation_id: str, count: int) -> list[event_pb2.Event]:
    """The conversation's first `count` message-created events, replayed by SubscribeEvents from sequence 0."""
    stub = event_service_pb2_grpc.EventServiceStub(grpc.insecure_channel(hub.grpc_target))
    request = event_service_pb2.SubscribeEventsRequest(after_sequence=0, event_types=[CREATED])
    call = stub.SubscribeEvents(request, metadata=rig.tenant.metadata, timeout=WAIT)
    got: list[event_pb2.Event] = []
    try:
        for response in call:
            got.extend(e for e in response.events if e.message.conversation_id == conversation_id)
            if len(got) >= count:
                break
    finally:
        call.cancel()
    return got


def test_order_support_5678_is_one_conversation_across_sms_email_webchat_and_sms(
    story_hub: Hub,
    twilio: TwilioStandIn,
    smtp: SmtpStandIn,
    invoice_url: str,
    browser: Any,  # noqa: F811
) -> None:
    rig = Rig(story_hub, twilio, new_tenant(story_hub))
    page_errors: list[str] = []
    context = browser.new_context()
    try:
        with run_receiver() as receiver:
            # Set-up: an SMS number, a mailbox, a web chat widget, and a webhook endpoint.
            sms_account = rig.twilio_account()
            mailbox = f"support-{uuid.uuid4().hex[:8]}@shop.example"
            creds = smtp.credentials()
            created(
                rig,
                "/v1.0/conversation_accounts",
                {
                    "type": "email",
                    "name": "Support mailbox",
                    "address": {"type": "email", "target": mailbox, "target_name": "Shop Support"},
                    "secret": creds.pop("password"),
                    "token": creds.pop("username"),
                    "provider_data": creds,
                },
            )
            webchat = created(rig, "/v1.0/conversation_accounts", {"type": "webchat", "name": "site chat"})
            endpoint = created(rig, "/v1.0/webhook_endpoints", {"url": receiver.base_url + "/convhub"})

            # 1. The customer asks by SMS: a signed Twilio hook opens the conversation.
            assert rig.inbound(sms_account, CUSTOMER_PHONE, QUESTION).status_code == 200
            [conversation] = rig.conversations()
            conversation_id = conversation["id"]
            participants = rig.rest.get(f"/v1.0/conversations/{conversation_id}/participants").json()["result"]
            [person] = [p for p in participants if [a["target"] for a in p["addresses"]] == [CUSTOMER_PHONE]]

            # 2. Support adds the person's email address and answers by email with the invoice attached.
            person = add_address(rig, person, {"type": "email", "target": CUSTOMER_EMAIL})
            before = len(smtp.received)
            media = {"type": "file", "url": invoice_url, "filename": "invoice-5678.pdf", "mime_type": "application/pdf"}
            answer = sent(
                rig,
                conversation_id,
                {"text": ANSWER, "channel": "email", "subject": "Order Support #5678", "medias": [media]},
            )
            mail = smtp.wait_for(before + 1)[before]
            assert mail.rcpt_tos == [CUSTOMER_EMAIL] and mail.mail_from == mailbox
            assert mail.message["Subject"] == "Order Support #5678"
            [attached] = list(mail.message.iter_attachments())
            assert attached.get_content_type() == "application/pdf" and attached.get_content() == PDF
            assert attached.get_filename() == "invoice-5678.pdf"

            # 3. The customer opens the site's chat; support links that visitor to the person; they write.
            page = context.new_page()
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(f"{story_hub.http_base}/webchat/{webchat['id']}")
            page.wait_for_selector("#convhub-webchat[data-ready='true']", timeout=WAIT_MS)
            visitor_id = page.get_attribute("#convhub-webchat", "data-visitor-id")
            assert visitor_id and visitor_id.startswith("v")
            assert page.get_attribute("#convhub-webchat", "data-conversation-id") == ""
            # The visitor's own token cannot link (or touch) anyone: only support's API token can.
            visitor_token = page.evaluate(f"localStorage.getItem('convhub.webchat.{webchat['id']}')")
            claim = rig.anonymous.patch(
                f"/v1.0/conversations/{conversation_id}/participants/{person['id']}",
                params={"updateMask": "addresses"},
                json={"addresses": [{"type": "webchat", "target": visitor_id}]},
                headers={"authorization": f"Bearer {visitor_token}"},
            )
            assert visitor_token and claim.status_code == 401, claim.text
            add_address(rig, person, {"type": "webchat", "target": visitor_id})
            page.fill("#chat-input", FOLLOW_UP)
            page.press("#chat-input", "Enter")
            page.wait_for_selector(f"li.msg.visitor >> text={FOLLOW_UP}", timeout=WAIT_MS)
            assert page.get_attribute("#convhub-webchat", "data-conversation-id") == conversation_id

            # 4. Support confirms by SMS: it reaches the Twilio stand-in (and the open chat page shows it).
            confirmation = sent(rig, conversation_id, {"text": CONFIRMATION, "channel": "message"})
            [texted] = [m for m in twilio.sent_to(CUSTOMER_PHONE) if m["account_sid"] == sms_account["sid"]]
            assert texted["body"] == CONFIRMATION and texted["from"] == sms_account["number"]
            page.wait_for_selector(f"li.msg.agent >> text={CONFIRMATION}", timeout=WAIT_MS)
            shown = page.eval_on_selector_all("#chat-log li", "items => items.map(i => [i.className, i.textContent])")
            assert shown == [
                ["msg visitor", QUESTION],
                ["msg agent", ANSWER],
                ["msg visitor", FOLLOW_UP],
                ["msg agent", CONFIRMATION],
            ]

            # One conversation, four messages, each on its channel, in order.
            assert [c["id"] for c in rig.conversations()] == [conversation_id]
            history = rig.messages(conversation_id)  # ListMessages: oldest first
            expected = [
                ("incoming", "message", QUESTION),
                ("outgoing", "email", ANSWER),
                ("incoming", "webchat", FOLLOW_UP),
                ("outgoing", "message", CONFIRMATION),
            ]
            assert [(m["direction"], m["channel"], m["text"]) for m in history] == expected
            assert [history[1]["id"], history[3]["id"]] == [answer["id"], confirmation["id"]]
            ids = [m["id"] for m in history]

            # The same history from SubscribeEvents, replayed from sequence 0.
            events = subscribed_history(story_hub, rig, conversation_id, len(ids))
            assert [e.message.id for e in events] == ids
            assert [common_pb2.ConversationType.Name(e.message.channel) for e in events] == [
                "CONVERSATION_TYPE_MESSAGE",
                "CONVERSATION_TYPE_EMAIL",
                "CONVERSATION_TYPE_WEBCHAT",
                "CONVERSATION_TYPE_MESSAGE",
            ]
            assert [e.sequence for e in events] == sorted(e.sequence for e in events)

            # And from the webhook endpoint: every delivery verified with the reference library, in order.
            def deliveries() -> list[dict[str, Any]]:
                """Message webhooks in arrival order, each verified; a redelivery (same webhook-id) counted once."""
                firsts = {r.webhook_id: r for r in reversed(receiver.delivered("/convhub"))}
                arrived = sorted(firsts.values(), key=lambda r: r.at)
                bodies = [r.verify(endpoint["secret"]) for r in arrived]
                return [b["data"] for b in bodies if b["type"] == "conversation_message_created"]

            wait_until(lambda: len(deliveries()) >= len(ids), WAIT, "four message webhooks")
            hooked = deliveries()
            assert [(d["id"], d["conversation_id"], d["channel"]) for d in hooked] == [
                (m["id"], conversation_id, m["channel"]) for m in history
            ]
    finally:
        context.close()
        rig.close()
    assert page_errors == [], page_errors


def test_a_site_embedding_the_widget_in_an_iframe_learns_the_visitor_id(
    story_hub: Hub,
    twilio: TwilioStandIn,
    browser: Any,  # noqa: F811
) -> None:
    """The site (another origin) gets `convhub.webchat.session` from the widget's frame: what its backend links."""
    rig = Rig(story_hub, twilio, new_tenant(story_hub))
    webchat = created(rig, "/v1.0/conversation_accounts", {"type": "webchat", "name": "site chat"})
    host_page = (
        "<!doctype html><p id='seen'></p><script>"
        "addEventListener('message', (e) => { if (e.data && e.data.type === 'convhub.webchat.session')"
        " document.getElementById('seen').textContent = JSON.stringify({data: e.data, origin: e.origin}); });"
        f"</script><iframe src='{story_hub.http_base}/webchat/{webchat['id']}'></iframe>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(host_page)))
            self.end_headers()
            self.wfile.write(host_page)

    site = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.daemon_threads = True
    threading.Thread(target=site.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{site.server_address[1]}/shop")
        page.wait_for_function("document.getElementById('seen').textContent !== ''", timeout=WAIT_MS)
        seen = json.loads(page.text_content("#seen") or "{}")
        frame = page.frame_locator("iframe").locator("#convhub-webchat")
        visitor_id = frame.get_attribute("data-visitor-id")
        assert visitor_id and visitor_id.startswith("v") and seen["origin"] == story_hub.http_base
        # Ids only: the visitor token stays inside the frame.
        assert seen["data"] == {"type": "convhub.webchat.session", "visitor_id": visitor_id, "conversation_id": ""}
    finally:
        context.close()
        site.shutdown()
        site.server_close()
        rig.close()
