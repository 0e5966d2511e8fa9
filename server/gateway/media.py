"""`GET /v1.0/media/{media_id}`: media bytes convhub keeps (store/media_files.py), for the API token's customer.

The token is the same as for every REST call (`Authorization: Bearer`, or
`?token=` / `?accesskey=`, exactly one of them); another customer's media id answers 404, like any
other resource of theirs. Served so a browser cannot run it as a page of
ours: `nosniff`, a sandboxing CSP, and `attachment` unless it is an image,
video or audio item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route

from convhub.server.api.credentials import single_token
from convhub.server.api.dispatch import Caller
from convhub.server.channels.media_links import MediaLinks
from convhub.server.errors import ApiError
from convhub.server.gateway.errors import dumps, error_payload, http_status, simple_status
from convhub.server.store.media_files import MediaFiles

AUTH_QUERY_PARAMS = ("token", "accesskey")
INLINE_KINDS = ("image/", "video/", "audio/")


def _error(code: int, message: str) -> Response:
    return Response(
        dumps(error_payload(simple_status(code, message))), status_code=http_status(code), media_type="application/json"
    )


def _token(request: Request) -> str | None:
    """The call's one API token, by the same rule as every REST call (api/credentials.py)."""
    sources = [("authorization", value) for value in request.headers.getlist("authorization")]
    sources += [(key, value) for key, value in request.query_params.multi_items() if key in AUTH_QUERY_PARAMS]
    return single_token(sources)


MEDIA_PREFIX = "/v1.0/media"


def media_mount(
    authenticate: Callable[[str | None], Caller], files: MediaFiles, links: MediaLinks | None = None
) -> Mount:
    """The media download route under MEDIA_PREFIX; `authenticate` is the dispatcher's (ApiError for a bad token).

    With `links`, a request carrying a signed link's `signature` (channels/media_links.py: a provider
    fetching an outgoing message's media) is served without a token while the link is valid.
    """

    async def get_media(request: Request) -> Response:
        query = request.query_params
        if links is not None and "signature" in query:
            customer_id = query.get("customer", "")
            if not links.verify(
                customer_id, request.path_params["media_id"], query.get("expires", ""), query["signature"]
            ):
                return _error(code_pb2.UNAUTHENTICATED, "invalid or expired media link")
        else:
            try:
                caller = authenticate(_token(request))  # ambiguous credentials are 400 before any lookup
            except ApiError as exc:
                status = exc.to_status()
                return _error(status.code, status.message)
            customer_id = caller.customer_id
        found = await asyncio.to_thread(files.find, customer_id, request.path_params["media_id"])
        if found is None:
            return _error(code_pb2.NOT_FOUND, "no such media")
        inline = found.mime_type.startswith(INLINE_KINDS)
        return FileResponse(
            found.path,
            media_type=found.mime_type,
            content_disposition_type="inline" if inline else "attachment",
            filename=None if inline else request.path_params["media_id"],
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, max-age=86400",
            },
        )

    return Mount(MEDIA_PREFIX, routes=[Route("/{media_id}", get_media, methods=["GET", "HEAD"])])
