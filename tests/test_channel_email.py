"""Email: real SMTP both ways, the raw-message hook, bounces, attachments and threading (SQLite and PostgreSQL).

Outbound goes to an aiosmtpd server standing in for the customer's mail
provider (tests/smtp_standin.py), and the MIME it receives is read back with
the standard library. Inbound mail is sent with aiosmtplib into our own
receiver, or posted raw to the hook; messages are built with the standard
library's EmailMessage, never with the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest

from convhub.server.channels.adapter import CannotTell, ChannelAccount, HookContext, Outbound, Receipt, SendFailed
from convhub.server.channels.email import EmailAdapter, unsubscribe_signature
from convhub.server.channels.email_mime import InboundEmail, NotAnEmail, html_to_text, parse, trim_quoted
from convhub.server.channels.hooks import channel_account
from convhub.server.channels.smtp_receiver import SmtpReceiver
from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.services.email_threads import EmailThreads
from convhub.server.services.ingest import InboundMessage, Ingested, IngestService
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database
from convhub.server.store.media_files import MediaFiles
from tests.hook_harness import hook_db, hook_harness
from tests.smtp_standin import SmtpStandIn

__all__ = ["hook_db"]  # the module-scoped database fixture, per backend

OUR_ADDRESS = "support@shop.example"
CUSTOMER = "alice@mail.example"
HOOK_SECRET = "hook-secret-0123456789"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpStandIn]:
    server = SmtpStandIn().start()
    yield server
    server.stop()


def person_email(
    text: str = "Where is my order #5678?",
    *,
    subject: str = "Order Support #5678",
    sender: str = CUSTOMER,
    to: str = OUR_ADDRESS,
    html: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
    in_reply_to: str = "",
    message_id: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Alice Example <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="mail.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    if text:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    if attachment is not None:
        name, mime, data = attachment
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def bounce_for(
    original_message_id: str, *, diagnostic: str = "smtp; 550 5.1.1 <alice@mail.example>: no such user"
) -> bytes:
    """An RFC 3464 report as MTAs write it, with the original's headers embedded."""
    boundary = "REPORT-BOUNDARY"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.shop.example>\r\n"
        f"To: {OUR_ADDRESS}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='mx.shop.example')}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.shop.example\r\n"
        "\r\n"
        "Final-Recipient: rfc822; alice@mail.example\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"From: {OUR_ADDRESS}\r\n"
        "To: alice@mail.example\r\n"
        f"Message-ID: <{original_message_id}>\r\n"
        "Subject: Re: Order Support #5678\r\n"
        f"--{boundary}--\r\n"
    ).encode()


# --- pure reading rules ------------------------------------------------------


def test_quoted_history_is_trimmed() -> None:
    text = (
        "Thanks, got it!\n\nOn Mon, 1 Dec 2026 at 10:00, Support <support@shop.example> wrote:\n> Your order shipped.\n"
    )
    assert trim_quoted(text) == "Thanks, got it!"
    split = "Yes please.\nOn Mon, 1 Dec 2026 at 10:00 Support\n<support@shop.example> wrote:\n> earlier"
    assert trim_quoted(split) == "Yes please."
    assert trim_quoted("a\n> quoted\nb") == "a\nb"


def test_html_is_reduced_to_visible_text() -> None:
    markup = (
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head>"
        "<body><p>Hello&nbsp;<b>there</b></p><div>Line two</div><blockquote>old reply</blockquote></body></html>"
    )
    assert html_to_text(markup) == "Hello there\n\nLine two"


def test_encoded_names_charsets_and_old_style_attachment_names_are_read() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@mail.example>\r\n"
        b"To: Support <support@shop.example>, other@shop.example\r\n"
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
        b"Message-ID:  <abc.123@mail.example> \r\n"
        b"References: <one@x> <two@y>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Sch=F6ne Gr=FC=DFe\r\n"
        b'--B\r\nContent-Type: application/pdf; name="old.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + base64.b64encode(PDF[:100])
        + b"\r\n--B--\r\n"
    )
    parsed = parse(raw)
    assert isinstance(parsed, InboundEmail)
    assert (parsed.sender, parsed.sender_name) == ("jm@mail.example", "J\u00fcrgen M\u00fcller")
    assert parsed.recipients == ["support@shop.example", "other@shop.example"]
    assert parsed.subject == "Gr\u00fc\u00dfe" and parsed.text == "Sch\u00f6ne Gr\u00fc\u00dfe"
    assert parsed.message_id == "abc.123@mail.example" and parsed.thread_ids == ["two@y", "one@x"]
    assert [(a.filename, a.mime_type, a.data) for a in parsed.attachments] == [
        ("old.pdf", "application/pdf", PDF[:100])
    ]
    with pytest.raises(NotAnEmail):
        parse(b"Subject: no sender\r\n\r\nhello")


# --- outbound over real SMTP -------------------------------------------------


def smtp_account(smtp: SmtpStandIn, customer_id: str | None = None, **extra: str) -> ChannelAccount:
    return ChannelAccount(
        id=str(uuid.uuid4()),
        customer_id=customer_id or str(uuid.uuid4()),
        channel="email",
        provider="smtp",
        address=Address("email", OUR_ADDRESS, "Shop Support"),
        credentials=smtp.credentials(hook_secret=HOOK_SECRET, **extra),
    )


def outbound(**fields: Any) -> Outbound:
    values: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
        "sender": Address("email", OUR_ADDRESS, "Shop Support"),
        "recipient": Address("email", CUSTOMER, "Alice"),
        "text": "Your order has shipped.\n\nThe invoice is attached.",
        "subject": "Your order #5678",
    }
    values.update(fields)
    return Outbound(**values)


async def test_send_delivers_text_html_attachment_and_headers(smtp: SmtpStandIn, tmp_path: Path) -> None:
    media = MediaFiles(tmp_path / "media", max_total_bytes=1 << 24, max_item_bytes=1 << 20)
    account = smtp_account(smtp, reply_to="plus")
    stored = media.save(account.customer_id, PDF, "application/pdf")
    adapter = EmailAdapter(media, None, public_url="https://hub.example.test", timeout=5)
    conversation_id = str(uuid.uuid4())
    pdf_item = {
        "type": "file",
        "url": f"https://hub.example.test/v1.0/media/{stored.id}",
        "mime_type": "application/pdf",
        "filename": "invoice-5678.pdf",
        "size": len(PDF),
    }
    before = len(smtp.received)
    async with httpx.AsyncClient() as http:
        accepted = await adapter.send(http, account, outbound(medias=[pdf_item], conversation_id=conversation_id))
    got = smtp.wait_for(before + 1)[before]
    assert got.rcpt_tos == [CUSTOMER] and got.mail_from == OUR_ADDRESS
    assert smtp.logins and smtp.logins[-1] == smtp.username
    msg = got.message
    assert msg["Message-ID"] == f"<{accepted.provider_message_id}>" and accepted.delivery_status == "sent"
    assert msg["Subject"] == "Your order #5678"
    assert msg["Reply-To"] == f"support+c{conversation_id.replace('-', '')}@shop.example"
    assert msg["From"].addresses[0].addr_spec == OUR_ADDRESS
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").strip() == "Your order has shipped.\n\nThe invoice is attached."
    assert html is not None and "<p>Your order has shipped.</p>" in html.get_content()
    attachments = list(msg.iter_attachments())
    assert [(a.get_filename(), a.get_content_type()) for a in attachments] == [("invoice-5678.pdf", "application/pdf")]
    assert attachments[0].get_content() == PDF
    unsubscribe = msg["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith(f"https://hub.example.test/v1.0/hooks/email/{account.id}/unsubscribe?")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_every_attempt_of_a_job_carries_the_same_message_id(smtp: SmtpStandIn, tmp_path: Path) -> None:
    """A retried job must not look like a second message to the recipient's client (and the id stays findable)."""
    adapter = EmailAdapter(
        MediaFiles(tmp_path, max_total_bytes=1, max_item_bytes=1), None, public_url="http://h", timeout=5
    )
    account = smtp_account(smtp)
    job = outbound()
    async with httpx.AsyncClient() as http:
        first = await adapter.send(http, account, job)
        again = await adapter.send(http, account, job)
        other = await adapter.send(http, account, outbound())
    assert first.provider_message_id == again.provider_message_id != other.provider_message_id
    assert first.provider_message_id.endswith("@shop.example")


async def test_smtp_4xx_and_unreachable_retry_5xx_is_final(smtp: SmtpStandIn, tmp_path: Path) -> None:
    adapter = EmailAdapter(
        MediaFiles(tmp_path, max_total_bytes=1, max_item_bytes=1), None, public_url="http://h", timeout=3
    )
    account = smtp_account(smtp)
    async with httpx.AsyncClient() as http:
        smtp.rcpt_replies.append("451 4.7.1 greylisted, try again later")
        with pytest.raises(SendFailed) as soft:
            await adapter.send(http, account, outbound())
        assert soft.value.retryable and soft.value.code == "smtp_451"
        smtp.rcpt_replies.append("550 5.1.1 no such user")
        with pytest.raises(SendFailed) as hard:
            await adapter.send(http, account, outbound())
        assert not hard.value.retryable and hard.value.code == "smtp_550" and "no such user" in hard.value.message
        smtp.data_replies.append("554 5.7.1 rejected as spam")
        with pytest.raises(SendFailed) as data:
            await adapter.send(http, account, outbound())
        assert not data.value.retryable and data.value.code == "smtp_554"
        wrong = dataclasses.replace(account, credentials={**account.credentials, "password": "nope"})
        with pytest.raises(SendFailed) as auth:
            await adapter.send(http, wrong, outbound())
        assert not auth.value.retryable and auth.value.code == "smtp_535"
        closed = dataclasses.replace(account, credentials={**account.credentials, "port": "1"})
        with pytest.raises(SendFailed) as unreachable:
            await adapter.send(http, closed, outbound())
        assert unreachable.value.retryable and unreachable.value.code == "unreachable"
        with pytest.raises(CannotTell):
            await adapter.find_sent(http, account, outbound(), 0)


# --- inbound: shared set-up over a real ingest and database -------------------


@dataclass
class Inbox:
    db: Database
    customer_id: str
    account: ChannelAccount
    adapter: EmailAdapter
    hooks: HookContext
    receipts: list[Receipt]
    ingested: list[InboundMessage] = field(default_factory=list)


class RecordingIngest:
    """The real IngestService, remembering each command (to see thread_conversation_id)."""

    def __init__(self, real: IngestService, seen: list[InboundMessage]) -> None:
        self.real = real
        self.seen = seen

    async def ingest(self, message: InboundMessage) -> Ingested:
        self.seen.append(message)
        return await self.real.ingest(message)


@pytest.fixture
async def inbox(hook_db: Database, tmp_path: Path) -> AsyncIterator[Inbox]:
    from convhub.server.services.accounts import AccountService, NewAccount

    customer_id = create_customer(hook_db.writer, f"email-{uuid.uuid4().hex[:8]}")
    address = f"support-{uuid.uuid4().hex[:8]}@shop.example"
    created = AccountService(hook_db, Settings()).create(
        NewAccount(
            customer_id,
            "email",
            name="mail",
            address=Address("email", address),
            credentials={"hook_secret": HOOK_SECRET, "host": "127.0.0.1"},
        )
    )
    threads = EmailThreads(hook_db)
    opened = threads.account_for(address)
    assert opened is not None and opened.id == created.id and opened.provider == "smtp"
    media = MediaFiles(tmp_path / "media", max_total_bytes=1 << 24, max_item_bytes=64 << 10)
    adapter = EmailAdapter(media, threads, public_url="http://hub.test", timeout=5)
    receipts: list[Receipt] = []
    seen: list[InboundMessage] = []

    async def receipt(report: Receipt) -> None:
        receipts.append(report)

    async with httpx.AsyncClient() as http:
        hooks = HookContext(
            load_account=lambda provider, account_id: _none(),
            ingest=RecordingIngest(IngestService(hook_db, Settings()), seen),  # type: ignore[arg-type]
            receipt=receipt,
            public_url="http://hub.test",
            http=http,
        )
        yield Inbox(hook_db, customer_id, channel_account(opened), adapter, hooks, receipts, seen)


async def _none() -> None:
    return None


def stored_messages(db: Database, customer_id: str) -> list[Any]:
    from sqlalchemy import text

    with db.writer.connect() as conn:
        return list(
            conn.execute(
                text("SELECT * FROM messages WHERE customer_id = :c ORDER BY tm_create, id"), {"c": customer_id}
            )
        )


# --- inbound through our SMTP receiver -----------------------------------------


async def test_smtp_receiver_lands_mail_for_our_address_and_refuses_others(inbox: Inbox) -> None:
    address = inbox.account.address
    assert address is not None
    receiver = SmtpReceiver("127.0.0.1:0", inbox.adapter, inbox.hooks, EmailThreads(inbox.db), data_size_limit=1 << 20)
    await receiver.start()
    try:
        assert receiver.bound is not None
        port = receiver.bound[1]
        msg = person_email(to=address.target, attachment=("photo.png", "image/png", b"\x89PNG" + b"x" * 1000))
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=10)
        rows = stored_messages(inbox.db, inbox.customer_id)
        assert len(rows) == 1
        row = rows[0]
        assert (row.channel, row.direction, row.source_target, row.source_name) == (
            "email",
            "incoming",
            CUSTOMER,
            "Alice Example",
        )
        assert row.text == "Where is my order #5678?" and row.subject == "Order Support #5678"
        assert row.transaction_id == msg["Message-ID"].strip("<>")
        [media] = row.medias if isinstance(row.medias, list) else __import__("json").loads(row.medias)
        assert media["mime_type"] == "image/png" and media["filename"] == "photo.png" and media["type"] == "image"
        media_id = media["url"].rpartition("/")[2]
        found = inbox.adapter.media.find(inbox.customer_id, media_id)
        assert found is not None and found.path.read_bytes() == b"\x89PNG" + b"x" * 1000

        # The same message again (an MTA retrying after a lost 250): nothing new.
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=10)
        assert len(stored_messages(inbox.db, inbox.customer_id)) == 1

        # A plus-address of ours is still ours; someone else's address is refused at RCPT.
        local, _, domain = address.target.partition("@")
        await aiosmtplib.send(person_email("plus", to=f"{local}+c{'0' * 32}@{domain}"), hostname="127.0.0.1", port=port)
        assert len(stored_messages(inbox.db, inbox.customer_id)) == 2
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await aiosmtplib.send(person_email(to="nobody@elsewhere.example"), hostname="127.0.0.1", port=port)
        assert refused.value.recipients[0].code == 550

        # An attachment past the media item limit: 552, nothing stored.
        big = person_email(to=address.target, attachment=("big.bin", "application/octet-stream", b"z" * (65 << 10)))
        with pytest.raises(aiosmtplib.SMTPDataError) as too_big:
            await aiosmtplib.send(big, hostname="127.0.0.1", port=port)
        assert too_big.value.code == 552
        assert len(stored_messages(inbox.db, inbox.customer_id)) == 2
    finally:
        await receiver.stop()
    with pytest.raises(OSError):  # stopped: no longer listening
        await aiosmtplib.send(person_email(to=address.target), hostname="127.0.0.1", port=port, timeout=2)


async def test_smtp_receiver_stop_lets_a_message_in_data_land(inbox: Inbox) -> None:
    """Stopping (SIGTERM drain) refuses new sessions but answers the message already in DATA, stored."""
    address = inbox.account.address
    assert address is not None
    receiver = SmtpReceiver("127.0.0.1:0", inbox.adapter, inbox.hooks, EmailThreads(inbox.db), data_size_limit=1 << 20)
    await receiver.start()
    assert receiver.bound is not None
    port = receiver.bound[1]
    real = inbox.hooks.ingest
    started = asyncio.Event()

    class SlowIngest:
        async def ingest(self, message: InboundMessage) -> Ingested:
            started.set()
            await asyncio.sleep(0.5)
            return await real.ingest(message)

    object.__setattr__(inbox.hooks, "ingest", SlowIngest())
    try:
        sending = asyncio.create_task(
            aiosmtplib.send(person_email("in flight", to=address.target), hostname="127.0.0.1", port=port, timeout=10)
        )
        await asyncio.wait_for(started.wait(), 5)
        await receiver.stop()
        responses, _ = await sending  # 250, not a dropped connection
        assert all(r.code == 250 for r in responses.values())
    finally:
        object.__setattr__(inbox.hooks, "ingest", real)
        await receiver.stop()
    assert [row.text for row in stored_messages(inbox.db, inbox.customer_id)] == ["in flight"]


async def test_reply_threads_to_the_conversation_of_our_message(inbox: Inbox) -> None:
    """In-Reply-To naming one of our messages sets thread_conversation_id to its conversation; a reply whose
    client dropped References still threads by the plus-address it was sent to."""
    address = inbox.account.address
    assert address is not None
    first = person_email(to=address.target)
    await inbox.adapter.receive(inbox.hooks, inbox.account, first.as_bytes())
    conversation = stored_messages(inbox.db, inbox.customer_id)[0].conversation_id
    assert inbox.ingested[-1].thread_conversation_id is None  # a new thread

    reply = person_email("Thanks!", to=address.target, in_reply_to=first["Message-ID"])
    await inbox.adapter.receive(inbox.hooks, inbox.account, reply.as_bytes())
    assert inbox.ingested[-1].thread_conversation_id == conversation

    local, _, domain = address.target.partition("@")
    plus = f"{local}+c{conversation.replace('-', '')}@{domain}"
    await inbox.adapter.receive(inbox.hooks, inbox.account, person_email("again", to=plus).as_bytes())
    assert inbox.ingested[-1].thread_conversation_id == conversation

    unknown = person_email("x", to=f"{local}+c{uuid.uuid4().hex}@{domain}", in_reply_to="<nobody@nowhere>")
    await inbox.adapter.receive(inbox.hooks, inbox.account, unknown.as_bytes())
    assert inbox.ingested[-1].thread_conversation_id is None

    # The next email we send in that conversation answers the last inbound one.
    thread = EmailThreads(inbox.db).thread_of(conversation)
    assert thread.subject == "Order Support #5678"
    assert thread.in_reply_to == stored_messages(inbox.db, inbox.customer_id)[-1].transaction_id  # one room today


async def test_bounce_is_a_receipt_not_a_message(inbox: Inbox) -> None:
    result = await inbox.adapter.receive(inbox.hooks, inbox.account, bounce_for("abc-123@shop.example"))
    assert result.kind == "bounce"
    assert inbox.receipts == [
        Receipt(
            inbox.account.id, "abc-123@shop.example", "failed", "5.1.1", "550 5.1.1 <alice@mail.example>: no such user"
        )
    ]
    assert stored_messages(inbox.db, inbox.customer_id) == []


# --- the raw-message hook --------------------------------------------------------


def email_adapter_for(db: Database) -> Any:
    return lambda media: EmailAdapter(media, EmailThreads(db), public_url="http://unused", timeout=5)


async def test_hook_takes_a_raw_message_with_its_secret(hook_db: Database, tmp_path: Path) -> None:
    async with hook_harness(hook_db, tmp_path, email_adapter_for(hook_db), max_item_bytes=64 << 10) as (h, _):
        account_id = h.add_account("smtp", {"hook_secret": HOOK_SECRET}, Address("email", OUR_ADDRESS))
        url = f"{h.base_url}/v1.0/hooks/email/{account_id}"
        raw = person_email(
            "",
            html="<p>Hi,</p><p>the <b>PDF</b> please.</p><blockquote>On Monday you wrote: old</blockquote>",
            attachment=("scan.pdf", "application/pdf", PDF),
        ).as_bytes()
        async with httpx.AsyncClient(timeout=10) as client:
            unknown = await client.post(
                f"{h.base_url}/v1.0/hooks/email/{uuid.uuid4()}", content=b"x", headers={"X-Convhub-Hook-Secret": "x"}
            )
            assert unknown.status_code == 404
            for secret in (None, "wrong", HOOK_SECRET[:-1]):
                headers = {"X-Convhub-Hook-Secret": secret} if secret else {}
                denied = await client.post(url, content=raw, headers=headers)
                assert denied.status_code == 401, denied.text
            assert h.messages() == []
            ok = await client.post(url, content=raw, headers={"X-Convhub-Hook-Secret": HOOK_SECRET})
            assert ok.status_code == 200 and ok.json()["status"] == "ingested", ok.text
            again = await client.post(url, content=raw, headers={"X-Convhub-Hook-Secret": HOOK_SECRET})
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
            [row] = h.messages()
            assert row.text == "Hi,\n\nthe PDF please." and row.channel == "email"
            [media] = row.medias
            assert media["filename"] == "scan.pdf" and media["mime_type"] == "application/pdf"
            served = await client.get(media["url"], headers={"Authorization": f"Bearer {h.token}"})
            assert served.status_code == 200 and served.content == PDF
            assert served.headers["content-type"] == "application/pdf"

            big = person_email(attachment=("big.bin", "application/octet-stream", b"z" * (65 << 10))).as_bytes()
            refused = await client.post(url, content=big, headers={"X-Convhub-Hook-Secret": HOOK_SECRET})
            assert refused.status_code == 413
            junk = await client.post(
                url, content=b"not an email at all", headers={"X-Convhub-Hook-Secret": HOOK_SECRET}
            )
            assert junk.status_code == 400
            assert len(h.messages()) == 1
            assert len(list((tmp_path / "media").glob("*/*.bin"))) == 1  # the duplicate's and refused copies are gone

            bounced = await client.post(
                url, content=bounce_for("our-id@shop.example"), headers={"X-Convhub-Hook-Secret": HOOK_SECRET}
            )
            assert bounced.status_code == 200 and bounced.json()["status"] == "bounce"
            assert [(r.provider_message_id, r.delivery_status) for r in h.receipts] == [
                ("our-id@shop.example", "failed")
            ]


async def test_unsubscribe_link_is_signed_per_recipient(hook_db: Database, tmp_path: Path) -> None:
    opted_out: list[tuple[str, str]] = []

    async def opt_out(customer_id: str, address: str) -> None:
        opted_out.append((customer_id, address))

    def adapter(media: MediaFiles) -> EmailAdapter:
        return EmailAdapter(media, EmailThreads(hook_db), public_url="http://unused", timeout=5, opt_out=opt_out)

    async with hook_harness(hook_db, tmp_path, adapter) as (h, _):
        account_id = h.add_account("smtp", {"hook_secret": HOOK_SECRET}, Address("email", OUR_ADDRESS))
        token = base64.urlsafe_b64encode(CUSTOMER.encode()).decode().rstrip("=")
        good = unsubscribe_signature(HOOK_SECRET, account_id, CUSTOMER)
        url = f"{h.base_url}/v1.0/hooks/email/{account_id}/unsubscribe"
        async with httpx.AsyncClient(timeout=10) as client:
            page = await client.get(url, params={"a": token, "s": good})
            assert page.status_code == 200 and '<form method="post">' in page.text  # GET changes nothing
            other = base64.urlsafe_b64encode(b"bob@mail.example").decode().rstrip("=")
            forged = await client.post(url, params={"a": other, "s": good}, data={"List-Unsubscribe": "One-Click"})
            assert forged.status_code == 401
            assert opted_out == []
            one_click = await client.post(url, params={"a": token, "s": good}, data={"List-Unsubscribe": "One-Click"})
            assert one_click.status_code == 200, one_click.text
            assert opted_out == [(h.customer_id, CUSTOMER)]
