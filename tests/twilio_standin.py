"""A loopback stand-in for Twilio's Messages API: a real HTTP server, as strict as Twilio about auth and fields.

- `POST /2010-04-01/Accounts/{sid}/Messages.json`: HTTP basic auth must be the
  path's Account SID and its Auth Token (401, code 20003, otherwise); the form
  needs `To` and `From` (21604 / 21603, E.164, 21211 for a bad `To`) and
  `Body` or `MediaUrl` (21602); a body over 1,600 characters is 21617. A
  created message answers 201 with Twilio's Message resource. The message is
  recorded *before* any scripted delay, as Twilio would have it even if the
  caller never reads the answer.
- `GET` the same path lists messages, filtered by `To`, `From`, `DateSent>`,
  newest first, in Twilio's page shape.
- Inbound MMS media (`add_media`): `GET /2010-04-01/Accounts/{sid}/Messages/{MM}/Media/{ME}`
  needs the same basic auth and answers 307 to the media CDN on another origin
  (`localhost` rather than `127.0.0.1`), as Twilio does; the CDN refuses a
  request that still carries `Authorization` (400, as S3 does with a signed
  link) and answers the bytes with their Content-Type.
- Behaviours are scripted per recipient number (`script(to, ...)`): answer a
  status with a Twilio error body, answer 429 with Retry-After, or hang.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")
MEDIA_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/MM[0-9a-f]{32}/Media/(ME[0-9a-f]{32})$")
CDN_PATH = re.compile(r"^/cdn/(ME[0-9a-f]{32})$")


@dataclass
class Behaviour:
    """One scripted answer: `status` with a Twilio error `code`, `retry_after` for 429, or `hang` seconds."""

    status: int = 201
    code: int = 0
    message: str = ""
    retry_after: str | None = None
    hang: float = 0.0


@dataclass
class TwilioStandIn:
    accounts: dict[str, str] = field(default_factory=dict)  # sid -> auth token
    messages: list[dict[str, Any]] = field(default_factory=list)  # created, oldest first
    posts: Counter[str] = field(default_factory=Counter)  # POST attempts per To (accepted or not)
    delay: float = 0.0  # every accepted POST answers this much later
    list_fails: bool = False  # the list endpoint answers 500 (find_sent cannot tell)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # ME sid -> (bytes, content type)
    media_fetches: Counter[str] = field(default_factory=Counter)  # CDN answers with the bytes, per ME sid
    _scripts: dict[str, list[Behaviour]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> TwilioStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                standin._post(self)

            def do_GET(self) -> None:
                standin._get(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def new_account(self) -> tuple[str, str]:
        sid = "AC" + uuid.uuid4().hex
        token = uuid.uuid4().hex
        with self._lock:
            self.accounts[sid] = token
        return sid, token

    def add_media(self, sid: str, data: bytes, content_type: str) -> str:
        """A media item of an inbound MMS on account `sid`; returns its MediaUrl (on the API origin)."""
        media_sid = "ME" + uuid.uuid4().hex
        with self._lock:
            self.media[media_sid] = (data, content_type)
        return f"{self.url}/2010-04-01/Accounts/{sid}/Messages/MM{uuid.uuid4().hex}/Media/{media_sid}"

    def script(self, to: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self._scripts.setdefault(to, []).extend(behaviours)

    def sent_to(self, to: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["to"] == to]

    # --- handlers -----------------------------------------------------------

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the caller gave up (timeout) or died
            pass

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: int, message: str, **headers: str) -> None:
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}"}
        self._reply(h, status, {**body, "status": status}, headers)

    def _authorised(self, h: BaseHTTPRequestHandler, path: re.Pattern[str] = PATH) -> str | None:
        match = path.match(urlsplit(h.path).path)
        if match is None:
            self._error(h, 404, 20404, "The requested resource was not found")
            return None
        sid = match.group(1)
        auth = h.headers.get("Authorization", "")
        try:
            user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            user = password = ""
        with self._lock:
            expected = self.accounts.get(sid)
        if not auth.startswith("Basic ") or user != sid or expected is None or password != expected:
            self._error(h, 401, 20003, "Authenticate")
            return None
        return sid

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length", "0"))
        raw = h.rfile.read(length).decode()
        sid = self._authorised(h)
        if sid is None:
            return
        if h.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            self._error(h, 400, 20001, "Invalid content type")
            return
        form = parse_qs(raw, keep_blank_values=True)
        to = form.get("To", [""])[0]
        sender = form.get("From", [""])[0]
        body = form.get("Body", [""])[0]
        media = form.get("MediaUrl", [])
        with self._lock:
            self.posts[to] += 1
            script = self._scripts.get(to)
            behaviour = script.pop(0) if script else Behaviour()
        if behaviour.hang:
            time.sleep(behaviour.hang)
        if behaviour.status == 429:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            self._error(h, 429, 20429, "Too Many Requests", **headers)
            return
        if behaviour.status != 201:
            self._error(h, behaviour.status, behaviour.code, behaviour.message or "scripted failure")
            return
        if not to:
            self._error(h, 400, 21604, "A 'To' phone number is required.")
            return
        if not sender:
            self._error(h, 400, 21603, "A 'From' phone number is required.")
            return
        if not E164.match(to):
            self._error(h, 400, 21211, f"The 'To' number {to} is not a valid phone number.")
            return
        if not body and not media:
            self._error(h, 400, 21602, "Message body is required.")
            return
        if len(body) > 1600:
            self._error(h, 400, 21617, "The concatenated message body exceeds the 1600 character limit.")
            return
        now = datetime.now(UTC)
        message = {
            "sid": "SM" + uuid.uuid4().hex,
            "account_sid": sid,
            "to": to,
            "from": sender,
            "body": body,
            "status": "queued",
            "num_media": str(len(media)),
            "media_urls": media,
            "status_callback": form.get("StatusCallback", [""])[0],
            "date_created": format_datetime(now),
            "date_sent": format_datetime(now),
            "_created": now.timestamp(),
        }
        with self._lock:
            self.messages.append(message)
        if self.delay:
            time.sleep(self.delay)
        self._reply(h, 201, {k: v for k, v in message.items() if not k.startswith("_")}, {})

    def _media(self, h: BaseHTTPRequestHandler) -> None:
        if self._authorised(h, MEDIA_PATH) is None:
            return
        media_sid = MEDIA_PATH.match(urlsplit(h.path).path).group(2)  # type: ignore[union-attr]
        with self._lock:
            known = media_sid in self.media
        if not known:
            self._error(h, 404, 20404, "The requested resource was not found")
            return
        assert self._server is not None
        location = f"http://localhost:{self._server.server_address[1]}/cdn/{media_sid}?Expires=4102444800"
        h.send_response(307)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _cdn(self, h: BaseHTTPRequestHandler) -> None:
        media_sid = CDN_PATH.match(urlsplit(h.path).path).group(1)  # type: ignore[union-attr]
        if h.headers.get("Authorization"):
            self._reply(h, 400, {"error": "Only one auth mechanism allowed"}, {})
            return
        with self._lock:
            found = self.media.get(media_sid)
            if found is not None:
                self.media_fetches[media_sid] += 1
        if found is None:
            self._reply(h, 404, {"error": "NoSuchKey"}, {})
            return
        data, content_type = found
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        if MEDIA_PATH.match(path):
            self._media(h)
            return
        if CDN_PATH.match(path):
            self._cdn(h)
            return
        sid = self._authorised(h)
        if sid is None:
            return
        if self.list_fails:
            self._error(h, 500, 20500, "Internal Server Error")
            return
        query = parse_qs(urlsplit(h.path).query)
        to = query.get("To", [None])[0]
        sender = query.get("From", [None])[0]
        after = query.get("DateSent>", [None])[0]
        since = datetime.strptime(after, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() if after else 0.0
        with self._lock:
            found = [
                m
                for m in reversed(self.messages)
                if m["account_sid"] == sid
                and (to is None or m["to"] == to)
                and (sender is None or m["from"] == sender)
                and m["_created"] >= since
            ]
        page = [{k: v for k, v in m.items() if not k.startswith("_")} for m in found[:50]]
        self._reply(h, 200, {"messages": page, "next_page_uri": None, "page": 0, "page_size": 50}, {})
