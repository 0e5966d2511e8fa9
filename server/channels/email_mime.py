"""Email on the wire: read an inbound RFC 5322 message (or RFC 3464 bounce), build an outbound one. Pure, no I/O.

Reading follows what a person sees in a mail client: the text/plain body if
there is one, else the HTML reduced to text; the quoted history of a reply
("On ... wrote:" and the `>` lines under it) is cut, so a conversation holds
each message once. Attachments keep their bytes, name and content type for
the media store. A delivery status notification (multipart/report;
report-type=delivery-status) is not a message from a person: it is read as
a `Bounce` naming the message we sent.

Message-IDs are kept in one normal form everywhere (provider message id of
inbound mail, the id we give outbound mail, the threading lookup): without
angle brackets and surrounding space; an id longer than the column is
replaced by its SHA-256, the same on both sides.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
import re
import uuid
from dataclasses import dataclass, field
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

MAX_MESSAGE_ID = 255  # messages.transaction_id
MAX_REFERENCES = 50  # the newest references are enough to find our message
_MSGID = re.compile(r"<([^<>\s]+)>")
_QUOTE_HEADER = re.compile(r"^\s*(On\s.+wrote:|-{2,}\s*Original Message\s*-{2,})\s*$", re.IGNORECASE)
_QUOTE_HEADER_START = re.compile(r"^\s*On\s.+", re.IGNORECASE)
_PLUS_CONVERSATION = re.compile(r"^(?P<local>[^+@]+)\+c(?P<id>[0-9a-f]{32})@(?P<domain>.+)$", re.IGNORECASE)
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"})
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})


def normal_message_id(value: str) -> str:
    """The stored form of a Message-ID: no brackets or space; SHA-256 past the column length; "" for none."""
    found = _MSGID.search(value or "")
    bare = found.group(1) if found else (value or "").strip().strip("<>").strip()
    if len(bare) > MAX_MESSAGE_ID:
        return "sha256:" + hashlib.sha256(bare.encode("utf-8", "replace")).hexdigest()
    return bare


def message_ids(value: str) -> list[str]:
    """Every Message-ID in an In-Reply-To or References header, in order, normalised."""
    return [normal_message_id(m) for m in _MSGID.findall(value or "")]


def plus_address(address: str, conversation_id: str) -> str:
    """`local+c<conversation hex>@domain`: a Reply-To that names the conversation, for clients that drop References."""
    local, _, domain = address.rpartition("@")
    return f"{local}+c{conversation_id.replace('-', '')}@{domain}" if local and conversation_id else address


def split_plus_address(address: str) -> tuple[str, str]:
    """(the address without its `+c<id>` tag, the conversation id it names or "")."""
    found = _PLUS_CONVERSATION.match(address.strip())
    if found is None:
        return address.strip(), ""
    return f"{found.group('local')}@{found.group('domain')}", str(uuid.UUID(hex=found.group("id")))


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class InboundEmail:
    """A message from a person, as the conversation keeps it."""

    sender: str  # addr-spec
    sender_name: str
    recipients: list[str]  # To and Cc addr-specs
    subject: str
    message_id: str  # normalised; "" when the message had none
    thread_ids: list[str]  # In-Reply-To then References, newest first, normalised
    text: str
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bounce:
    """An RFC 3464 report that a message we sent could not be delivered."""

    original_message_ids: list[str]  # candidates, best first
    status: str  # the enhanced status code, e.g. 5.1.1
    diagnostic: str  # the Diagnostic-Code text, else the Status
    delivered: bool = False  # Action: delivered/relayed/expanded rather than failed


class NotAnEmail(ValueError):
    """The bytes are not a message we can read (no From address)."""


def parse(raw: bytes) -> InboundEmail | Bounce | None:
    """The message, a bounce, or None for a report that changes nothing (a "delayed" DSN); NotAnEmail.

    policy.default parses a header anew on every access, so each header is read once here; the
    address and Message-ID headers are read raw (they carry no encoded words that matter to us)."""
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    if msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status":
        return _bounce(msg)
    raw_headers: dict[str, list[str]] = {}
    for key, value in msg.raw_items():
        raw_headers.setdefault(key.lower(), []).append(str(value))
    from_header = msg.get("From")
    addresses = getattr(from_header, "addresses", ())
    if not addresses or "@" not in addresses[0].addr_spec:
        _, fallback = parseaddr(" ".join(raw_headers.get("from", [])))
        if "@" not in fallback:
            raise NotAnEmail("the message has no From address")
        sender, name = fallback, ""
    else:
        sender, name = addresses[0].addr_spec, addresses[0].display_name
    recipients = [addr for _, addr in getaddresses(raw_headers.get("to", []) + raw_headers.get("cc", []))]
    text, attachments = _body(msg)
    thread = message_ids(" ".join(raw_headers.get("in-reply-to", [])))
    thread += [m for m in reversed(message_ids(" ".join(raw_headers.get("references", [])))) if m not in thread]
    return InboundEmail(
        sender=sender,
        sender_name=name,
        recipients=[r for r in recipients if "@" in r],
        subject=_one_line(str(msg.get("Subject", ""))),
        message_id=normal_message_id(" ".join(raw_headers.get("message-id", [])[:1])),
        thread_ids=thread[:MAX_REFERENCES],
        text=trim_quoted(text),
        attachments=attachments,
    )


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _body(msg: EmailMessage) -> tuple[str, list[Attachment]]:
    """The text a person reads (plain preferred, else HTML reduced) and the attachments."""
    plain: str | None = None
    markup: str | None = None
    attachments: list[Attachment] = []
    for part in msg.walk() if msg.is_multipart() else [msg]:
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition() if "content-disposition" in part else None
        content_type = part.get_content_type()
        filename = (part.get_filename() or "") if disposition is not None else ""
        if (
            disposition == "attachment"
            or (disposition == "inline" and filename)
            or not content_type.startswith("text/")
        ):
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            if not filename:  # older mailers name attachments in Content-Type only
                name = part.get_param("name")
                filename = name if isinstance(name, str) else ""
            attachments.append(Attachment(filename, content_type, data))
        elif content_type == "text/plain" and plain is None:
            plain = _text_of(part)
        elif content_type == "text/html" and markup is None:
            markup = _text_of(part)
    if plain is not None and plain.strip():
        return plain, attachments
    return (html_to_text(markup) if markup else ""), attachments


def _text_of(part: Message) -> str:
    """The decoded text of a text/* part: its charset, else UTF-8; undecodable bytes replaced, never an error."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = str(part.get_param("charset") or "utf-8")
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", "replace")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._quoting = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag == "blockquote":
            self._quoting += 1  # quoted history in HTML replies: left out like `>` lines
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        elif tag == "blockquote" and self._quoting:
            self._quoting -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping and not self._quoting:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: tags dropped, blocks as lines, scripts, styles and blockquotes left out."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def trim_quoted(text: str) -> str:
    """The new part of a reply: stops at "On ... wrote:" (also split over two lines) or a forwarded
    "Original Message" header, and drops `>` quoted lines."""
    lines = text.replace("\r\n", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _QUOTE_HEADER.match(line):
            break
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if _QUOTE_HEADER_START.match(line) and following.strip().endswith("wrote:"):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def _bounce(msg: EmailMessage) -> Bounce | None:
    status_part = next((p for p in msg.walk() if p.get_content_type() == "message/delivery-status"), None)
    action, status, diagnostic, original = "", "", "", ""
    if status_part is not None:
        for block in _status_blocks(status_part):
            original = original or str(block.get("Original-Message-ID", "") or block.get("X-Original-Message-ID", ""))
            if block.get("Action"):
                action = action or str(block.get("Action", "")).strip().lower()
                status = status or str(block.get("Status", "")).strip()
                diagnostic = diagnostic or _one_line(str(block.get("Diagnostic-Code", "")))
    if action == "delayed":
        return None  # the MTA keeps trying: nothing final to report
    candidates = [normal_message_id(original)] if original else []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            embedded = _embedded_headers(part)
            if embedded is not None and embedded.get("Message-ID"):
                candidates.append(normal_message_id(str(embedded["Message-ID"])))
    if not candidates:  # no report field nor embedded copy: the message the bounce answers
        candidates = message_ids(str(msg.get("In-Reply-To", "")))[:1]
    return Bounce(
        original_message_ids=list(dict.fromkeys(c for c in candidates if c)),
        status=status,
        diagnostic=diagnostic.split(";", 1)[-1].strip() if diagnostic else status,
        delivered=action in ("delivered", "relayed", "expanded"),
    )


def _status_blocks(part: Message) -> list[Message]:
    """The per-message and per-recipient field blocks of a message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    raw = payload if isinstance(payload, str) else ""
    parser = BytesParser(policy=email.policy.default)
    return [parser.parsebytes(block.encode("utf-8", "replace")) for block in re.split(r"\r?\n\r?\n", raw) if block]


def _embedded_headers(part: Message) -> Message | None:
    if part.get_content_type() == "message/rfc822":
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        return None
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return None
    return BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)


# --- outbound --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    sender: str
    sender_name: str
    recipient: str
    recipient_name: str
    subject: str
    text: str
    message_id: str  # normalised (no brackets)
    reply_to: str = ""
    in_reply_to: str = ""  # normalised
    references: list[str] = field(default_factory=list)  # normalised, oldest first
    unsubscribe_url: str = ""
    attachments: list[Attachment] = field(default_factory=list)


def text_to_html(text: str) -> str:
    """The HTML alternative of a plain text body: escaped, paragraphs for blank lines, <br> for line breaks."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>'


def build(out: OutboundEmail) -> EmailMessage:
    """multipart/mixed (when there are attachments) over multipart/alternative text + HTML, with our headers."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = HeaderAddress(display_name=out.sender_name, addr_spec=out.sender)
    msg["To"] = HeaderAddress(display_name=out.recipient_name, addr_spec=out.recipient)
    msg["Subject"] = out.subject
    msg["Message-ID"] = f"<{out.message_id}>"
    msg["Date"] = email.utils.formatdate(localtime=False)
    if out.reply_to:
        msg["Reply-To"] = out.reply_to
    if out.in_reply_to:
        msg["In-Reply-To"] = f"<{out.in_reply_to}>"
    if out.references:
        msg["References"] = " ".join(f"<{m}>" for m in out.references)
    if out.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{out.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    msg.set_content(out.text or "")
    msg.add_alternative(text_to_html(out.text or ""), subtype="html")
    for item in out.attachments:
        maintype, _, subtype = (item.mime_type or "application/octet-stream").partition("/")
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype or "octet-stream", filename=item.filename)
    return msg
