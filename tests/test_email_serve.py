"""Email through a real `convhub serve`: its SMTP receiver, the REST API, the delivery worker, the bounce hook.

A person writes to the account's address (aiosmtplib into the receiver that
CONVHUB_SMTP_ADDRESS starts) with a PDF; support answers over REST with that
PDF attached; the answer reaches the SMTP stand-in threaded to the person's
mail; the person's reply lands in the same conversation; a bounce posted to
the hook marks the answer's delivery failed with the diagnostic.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest

from tests.channel_rig import PUBLIC_URL, close_hub, start_hub
from tests.conftest import BACKENDS, Hub, create_database, new_tenant, start_server
from tests.smtp_standin import SmtpStandIn
from tests.test_channel_email import CUSTOMER, PDF, bounce_for
from tests.twilio_standin import TwilioStandIn

SMTP_LINE = re.compile(r"SMTP on (\S+):(\d+)$")
HOOK_SECRET = "serve-hook-secret-42"
WAIT = 20.0


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpStandIn]:
    server = SmtpStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def mail_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, int]]:
    tmp_dir = tmp_path_factory.mktemp(f"email-{request.param}")
    twilio = TwilioStandIn().start()  # unused by these tests; every provider URL points at loopback
    try:
        for url in create_database(request.param, tmp_dir):
            env = {
                "CONVHUB_PUBLIC_URL": PUBLIC_URL,
                "CONVHUB_TWILIO_API_URL": twilio.url,
                "CONVHUB_SMTP_ADDRESS": "127.0.0.1:0",
                "CONVHUB_DELIVERY_POLL_INTERVAL": "0.1",
                "CONVHUB_PROVIDER_TIMEOUT": "5",
                "CONVHUB_DELIVERY_LEASE": "20",
                "CONVHUB_MEDIA_DIR": str(tmp_dir / "shared-media"),  # a volume replicas would share
            }
            hub = start_hub(request.param, url, tmp_dir, env)
            try:
                ports = [int(m.group(2)) for line in hub.output if (m := SMTP_LINE.search(line))]
                assert ports, hub.output
                yield hub, ports[0]
            finally:
                close_hub(hub)
    finally:
        twilio.stop()


def wait_until(fetch: Any, ready: Any, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_email_round_trip_through_serve(mail_hub: tuple[Hub, int], smtp: SmtpStandIn) -> None:
    hub, smtp_port = mail_hub
    tenant = new_tenant(hub)
    assert hub.http_base is not None
    rest = httpx.Client(base_url=hub.http_base, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=15)
    anonymous = httpx.Client(base_url=hub.http_base, timeout=15)
    try:
        our_address = f"support-{uuid.uuid4().hex[:8]}@shop.example"
        creds = smtp.credentials(hook_secret=HOOK_SECRET)
        account = rest.post(
            "/v1.0/conversation_accounts",
            json={
                "type": "email",
                "name": "Support mailbox",
                "address": {"type": "email", "target": our_address, "target_name": "Shop Support"},
                # VoIPBIN's body: secret = SMTP password, token = SMTP username, provider_data = the rest.
                "secret": creds.pop("password"),
                "token": creds.pop("username"),
                "provider_data": creds,
            },
        )
        assert account.status_code == 200, account.text
        assert account.json()["provider"] == "smtp" and "credentials" not in account.json()

        # 1. The person writes, with a PDF, to our SMTP receiver.
        question = EmailMessage()
        question["From"] = f"Alice <{CUSTOMER}>"
        question["To"] = our_address
        question["Subject"] = "Order Support #5678"
        question["Message-ID"] = make_msgid(domain="mail.example")
        question.set_content("Where is my order?")
        question.add_attachment(PDF, maintype="application", subtype="pdf", filename="receipt.pdf")
        asyncio.run(aiosmtplib.send(question, hostname="127.0.0.1", port=smtp_port, timeout=10))
        conversations = rest.get("/v1.0/conversations").json()["result"]
        assert len(conversations) == 1 and conversations[0]["type"] == "email"
        conversation_id = conversations[0]["id"]
        [inbound] = rest.get(f"/v1.0/conversations/{conversation_id}/messages").json()["result"]
        assert inbound["text"] == "Where is my order?" and inbound["medias"][0]["mime_type"] == "application/pdf"
        pdf_url = inbound["medias"][0]["url"]
        assert pdf_url.startswith(f"{PUBLIC_URL}/v1.0/media/")
        served = rest.get(pdf_url.removeprefix(PUBLIC_URL))
        assert served.status_code == 200 and served.content == PDF
        # The bytes live under CONVHUB_MEDIA_DIR, not the data dir's default media folder.
        kept = [f for f in (hub.data_dir / "shared-media").rglob("*") if f.is_file()]
        assert any(f.read_bytes() == PDF for f in kept), kept
        assert not (hub.data_dir / "media").exists()

        # 2. Support answers over REST, attaching the PDF; it reaches the SMTP stand-in, threaded.
        before = len(smtp.received)
        sent = rest.post(
            f"/v1.0/conversations/{conversation_id}/messages",
            json={"text": "It ships today; your receipt is attached.", "medias": [inbound["medias"][0]]},
        )
        assert sent.status_code == 200, sent.text
        answer = sent.json()
        done = wait_until(
            lambda: rest.get(f"/v1.0/conversations/{conversation_id}/messages/{answer['id']}").json(),
            lambda m: m["status"] != "progressing",
        )
        assert done["status"] == "done" and done["channel"] == "email", done
        got = smtp.wait_for(before + 1)[before]
        mail = got.message
        assert got.rcpt_tos == [CUSTOMER] and got.mail_from == our_address
        assert mail["In-Reply-To"] == question["Message-ID"]
        assert mail["Subject"] == "Re: Order Support #5678"
        assert mail["Message-ID"] == f"<{done['transaction_id']}>"
        [attached] = list(mail.iter_attachments())
        assert attached.get_content_type() == "application/pdf" and attached.get_content() == PDF

        # 3. The person's reply joins the conversation.
        reply = EmailMessage()
        reply["From"] = CUSTOMER
        reply["To"] = our_address
        reply["Subject"] = mail["Subject"]
        reply["Message-ID"] = make_msgid(domain="mail.example")
        reply["In-Reply-To"] = mail["Message-ID"]
        reply["References"] = f"{question['Message-ID']} {mail['Message-ID']}"
        reply.set_content(f"Great, thanks!\n\nOn Mon, Support <{our_address}> wrote:\n> It ships today.\n")
        asyncio.run(aiosmtplib.send(reply, hostname="127.0.0.1", port=smtp_port, timeout=10))
        history = rest.get(f"/v1.0/conversations/{conversation_id}/messages").json()["result"]
        assert len(rest.get("/v1.0/conversations").json()["result"]) == 1
        texts = sorted(m["text"] for m in history)
        assert "Great, thanks!" in texts and len(history) == 3

        # 4. A bounce for our answer, posted to the hook of another of the tenant's mailboxes (the
        #    bounce address may differ from the sender), marks its delivery failed with the reason.
        bounces = rest.post(
            "/v1.0/conversation_accounts",
            json={
                "type": "email",
                "address": {"type": "email", "target": f"bounces-{uuid.uuid4().hex[:8]}@shop.example"},
                "provider_data": {"host": "127.0.0.1", "hook_secret": HOOK_SECRET},
            },
        )
        assert bounces.status_code == 200, bounces.text
        hook = f"/v1.0/hooks/email/{bounces.json()['id']}"
        denied = anonymous.post(
            hook, content=bounce_for(done["transaction_id"]), headers={"X-Convhub-Hook-Secret": "x"}
        )
        assert denied.status_code == 401
        bounced = anonymous.post(
            hook, content=bounce_for(done["transaction_id"]), headers={"X-Convhub-Hook-Secret": HOOK_SECRET}
        )
        assert bounced.status_code == 200 and bounced.json()["status"] == "bounce", bounced.text
        failed = rest.get(f"/v1.0/conversations/{conversation_id}/messages/{answer['id']}").json()
        assert failed["delivery_status"] == "failed" and failed["error_code"] == "5.1.1"
        assert "no such user" in failed["error_message"]
        assert len(rest.get(f"/v1.0/conversations/{conversation_id}/messages").json()["result"]) == 3

        # 5. A subject given with the send is the email's subject (and the message's).
        before = len(smtp.received)
        titled = rest.post(
            f"/v1.0/conversations/{conversation_id}/messages",
            json={"text": "Confirmed.", "subject": "Your order #5678", "channel": "email"},
        )
        assert titled.status_code == 200 and titled.json()["subject"] == "Your order #5678", titled.text
        assert smtp.wait_for(before + 1)[before].message["Subject"] == "Your order #5678"
        too_long = rest.post(
            f"/v1.0/conversations/{conversation_id}/messages", json={"text": "x", "subject": "s" * 999}
        )
        assert too_long.status_code == 400 and "subject" in too_long.text
    finally:
        rest.close()
        anonymous.close()


def test_smtp_address_in_use_stops_the_start(tmp_path: Path) -> None:
    """A receiver that cannot listen is a start-up error naming the setting, not a half-started server."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(RuntimeError) as failed:
            start_server(
                f"sqlite:///{tmp_path / 'convhub.db'}",
                data_dir=tmp_path,
                env={"CONVHUB_SMTP_ADDRESS": f"127.0.0.1:{taken.getsockname()[1]}"},
            )
    finally:
        taken.close()
    assert "smtp address" in str(failed.value)
