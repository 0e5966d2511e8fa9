"""Signed links to kept media, for providers that fetch a message's media themselves (Twilio and Telnyx MMS).

`/v1.0/media/{id}` answers only to the customer's API token, which a provider
does not have, and a VoIPBIN client names a kept media by its `id` alone (the
codec stores `/v1.0/media/{id}`). So when a message goes out, each kept
media's URL becomes an absolute, expiring link:
`{CONVHUB_PUBLIC_URL}/v1.0/media/{id}?customer=…&expires=…&signature=…`,
where the signature is HMAC-SHA256 over the customer, the media id and the
expiry, keyed with a key derived from CONVHUB_SECRET_KEY (every replica
shares it; rotating that key ends the links). The media route serves a
request carrying a valid, unexpired signature without a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

from convhub.server.domain.messages import Media

MEDIA_PATH = "/v1.0/media/"
LINK_TTL = 7 * 86_400  # providers fetch at once; a week covers retries and queued sends
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class MediaLinks:
    def __init__(self, key: bytes, public_url: str, ttl: int = LINK_TTL) -> None:
        self._key = key
        self.public_url = public_url.rstrip("/")
        self.ttl = ttl

    def _signature(self, customer_id: str, media_id: str, expires: int) -> str:
        payload = f"{customer_id}/{media_id}/{expires}".encode()
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, customer_id: str, media_id: str, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.ttl
        query = urlencode(
            {"customer": customer_id, "expires": expires, "signature": self._signature(customer_id, media_id, expires)}
        )
        return f"{self.public_url}{MEDIA_PATH}{media_id}?{query}"

    def verify(self, customer_id: str, media_id: str, expires: str, signature: str, now: float | None = None) -> bool:
        """A link `sign` made for this customer and media, not yet expired."""
        if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._signature(customer_id, media_id, int(expires)), signature)

    def kept_media_id(self, url: str) -> str | None:
        """The id when `url` names a media convhub keeps (`/v1.0/media/{id}`, relative or on the public URL)."""
        if url.startswith(self.public_url + MEDIA_PATH):
            url = url[len(self.public_url) :]
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path.startswith(MEDIA_PATH):
            return None
        media_id = parts.path[len(MEDIA_PATH) :].lower()
        return media_id if _UUID.fullmatch(media_id) else None

    def for_provider(self, customer_id: str, medias: Sequence[Media]) -> list[Media]:
        """The medias with each kept one's URL replaced by a signed link a provider can fetch."""
        out: list[Media] = []
        for media in medias:
            media_id = self.kept_media_id(media["url"])
            out.append({**media, "url": self.sign(customer_id, media_id)} if media_id else media)
        return out
