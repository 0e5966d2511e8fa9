"""Inbound media a provider only links to (Twilio `MediaUrlN`, Telnyx `media[].url`), kept in the media store.

Why fetch at all: Twilio media URLs need the account's credentials (HTTP
basic auth with the Account SID and Auth Token) and Telnyx's are signed links
that expire, so a URL handed on to API clients would stop working or leak
credentials. Like LINE content (line.py), the bytes go to the media store
(store/media_files.py) and the media item's URL becomes
`{CONVHUB_PUBLIC_URL}/v1.0/media/{id}`.

Rules:
- fetched in the hook request, before ingest: never inside a DB transaction;
- credentials only go to the provider API's own origin (`auth_origin`); a
  redirect to another host (Twilio's media CDN) is followed without them
  (httpx drops `Authorization` on a cross-origin redirect);
- bounded: each item by the store's `max_item_bytes` while it arrives, the
  store by its total, each fetch by FETCH_TIMEOUT, at most MAX_REDIRECTS hops;
- a failed fetch never loses the message: the item keeps the provider's URL
  (and the MIME type the provider declared), and the message carries
  `error_code` `media_not_fetched` with an `error_message` naming the item and
  why. Nothing is retried later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx

from convhub.server.channels.adapter import ChannelAccount, HookContext
from convhub.server.domain.messages import Media, media_kind
from convhub.server.services.ingest import InboundMessage, Ingested
from convhub.server.store.media_files import MediaFiles, MediaRefused

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 20.0
MAX_REDIRECTS = 5
FETCH_CONCURRENCY = 4  # media of one message fetched at once
NOT_FETCHED = "media_not_fetched"
DEFAULT_MIME = "application/octet-stream"


@dataclass(frozen=True)
class KeptMedia:
    """The message's media after fetching, the store ids written (to drop if the message is not stored), the error."""

    medias: list[Media]
    stored_ids: list[str]
    error_code: str = ""
    error_message: str = ""


class FetchFailed(Exception):
    """Why one item could not be kept (short, safe to show: no credentials, no body)."""


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class MediaFetcher:
    """Fetches linked media into one media store for one provider."""

    def __init__(self, files: MediaFiles, *, provider: str, auth_origin: str = "") -> None:
        self.files = files
        self.provider = provider
        self._auth_origin = origin(auth_origin) if auth_origin else None

    async def keep(
        self,
        http: httpx.AsyncClient,
        customer_id: str,
        public_url: str,
        medias: Sequence[Media],
        names: Sequence[str],
        auth: tuple[str, str] | None = None,
    ) -> KeptMedia:
        """Fetch every linked item; `names` are the provider's field names for the errors (`MediaUrl0`)."""
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(media: Media, name: str) -> tuple[Media, str, str]:
            if not media["url"]:
                return media, "", ""
            async with limit:
                try:
                    return (*await self._keep_one(http, customer_id, public_url, media, auth), "")
                except FetchFailed as exc:
                    log.warning("%s media %s not kept: %s", self.provider, name, exc)
                    return media, "", f"{name}: {exc}"

        results = await asyncio.gather(*(one(m, n) for m, n in zip(medias, names, strict=True)))
        errors = [error for _, _, error in results if error]
        return KeptMedia(
            medias=[media for media, _, _ in results],
            stored_ids=[stored for _, stored, _ in results if stored],
            error_code=NOT_FETCHED if errors else "",
            error_message="; ".join(errors)[:1000],
        )

    async def _keep_one(
        self, http: httpx.AsyncClient, customer_id: str, public_url: str, media: Media, auth: tuple[str, str] | None
    ) -> tuple[Media, str]:
        data, mime_type = await self._fetch(http, media["url"], auth)
        mime_type = mime_type or media["mime_type"] or DEFAULT_MIME
        try:
            stored = await asyncio.to_thread(self.files.save, customer_id, data, mime_type)
        except (MediaRefused, OSError) as exc:
            raise FetchFailed(f"not stored: {exc}") from None
        kept: Media = {
            "type": media["type"] if media["mime_type"] else media_kind(stored.mime_type),
            "url": f"{public_url}/v1.0/media/{stored.id}",
            "mime_type": stored.mime_type,
            "filename": media["filename"],
            "size": stored.size,
        }
        return kept, stored.id

    async def _fetch(self, http: httpx.AsyncClient, url: str, auth: tuple[str, str] | None) -> tuple[bytes, str]:
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise FetchFailed("not an http(s) URL")
        send_auth = auth if auth is not None and origin(url) == self._auth_origin else None
        limit = self.files.max_item_bytes
        try:
            request = http.build_request("GET", url, timeout=FETCH_TIMEOUT)
            response = await http.send(request, auth=send_auth, follow_redirects=True, stream=True)
            try:
                if len(response.history) > MAX_REDIRECTS:
                    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")
                if response.status_code != 200:
                    raise FetchFailed(f"{self.provider} answered {response.status_code}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise FetchFailed(f"larger than {limit} bytes")
                    chunks.append(chunk)
            finally:
                await response.aclose()
        except httpx.TooManyRedirects:
            raise FetchFailed("too many redirects") from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"not fetched: {type(exc).__name__}") from None
        mime_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return b"".join(chunks), mime_type

    async def drop(self, customer_id: str, media_ids: Sequence[str]) -> None:
        """Remove files no stored message refers to (the hook was a redelivery, or ingest failed)."""
        for media_id in media_ids:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.files.remove, customer_id, media_id)


async def ingest_keeping_media(
    hooks: HookContext,
    fetcher: MediaFetcher | None,
    account: ChannelAccount,
    message: InboundMessage,
    names: Sequence[str],
    auth: tuple[str, str] | None = None,
) -> Ingested:
    """Fetch the message's linked media (no fetcher: keep the links), then ingest it.

    Files written for a message that is not stored (ingest failed, or the hook
    was a redelivery whose first message keeps its own files) are removed.
    """
    stored: list[str] = []
    if fetcher is not None and message.medias:
        kept = await fetcher.keep(hooks.http, account.customer_id, hooks.public_url, message.medias, names, auth)
        message = replace(message, medias=kept.medias, error_code=kept.error_code, error_message=kept.error_message)
        stored = kept.stored_ids
    try:
        ingested = await hooks.ingest.ingest(message)
    except BaseException:
        if fetcher is not None and stored:
            await fetcher.drop(account.customer_id, stored)
        raise
    if ingested.duplicate and fetcher is not None and stored:
        await fetcher.drop(account.customer_id, stored)
    return ingested
