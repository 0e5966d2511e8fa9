"""What every provider's hook routes share: the HookContext the app builds, bounded bodies, error responses.

Hook routes carry no API token: the provider's signature is the
authentication, checked against the account named in the path. The answers
are the same for every provider: unknown or deleted account 404, forged,
missing or stale signature 401 (nothing stored), malformed payload 400
naming what is wrong (nothing stored). Errors use the REST shim's JSON error
shape, so a person reading provider logs sees what API callers see.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from concurrent.futures import Executor

import httpx
from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from convhub.server.channels.adapter import ChannelAccount, ChannelAdapter, HookContext, Receipt
from convhub.server.config import Settings
from convhub.server.errors import ApiError, InvalidArgument
from convhub.server.gateway.errors import dumps, error_payload, http_status, simple_status
from convhub.server.services.channel_accounts import OpenedAccount
from convhub.server.services.use_cases import UseCases

MAX_HOOK_BODY = 1_048_576  # providers' payloads are small; LINE batches stay far below this


class HookRejected(Exception):
    """A hook request answered with an error before anything was stored."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def error_response(code: int, message: str) -> Response:
    status = simple_status(code, message)
    return Response(dumps(error_payload(status)), status_code=http_status(code), media_type="application/json")


def api_error_response(exc: ApiError) -> Response:
    status = exc.to_status()
    return Response(dumps(error_payload(status)), status_code=http_status(status.code), media_type="application/json")


def not_found() -> HookRejected:
    return HookRejected(error_response(code_pb2.NOT_FOUND, "no such account"))


def unauthenticated(why: str) -> HookRejected:
    return HookRejected(error_response(code_pb2.UNAUTHENTICATED, why))


def malformed(field: str, description: str) -> HookRejected:
    """400 naming the payload field that is wrong."""
    return HookRejected(api_error_response(InvalidArgument(field, description)))


async def read_body(request: Request, limit: int = MAX_HOOK_BODY) -> bytes:
    """The raw body (signatures cover the exact bytes); 413 past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HookRejected(error_response(code_pb2.OUT_OF_RANGE, f"body larger than {limit} bytes"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HookRejected(Response(b"body too large", status_code=413))
        chunks.append(chunk)
    return b"".join(chunks)


async def account_for(hooks: HookContext, provider: str, account_id: str) -> ChannelAccount:
    """The live account named in the path, of this provider; 404 otherwise (ids that are not UUIDs too)."""
    try:
        uuid.UUID(account_id)
    except ValueError:
        raise not_found() from None
    account = await hooks.load_account(provider, account_id)
    if account is None:
        raise not_found()
    return account


def channel_account(account: OpenedAccount) -> ChannelAccount:
    return ChannelAccount(
        id=account.id,
        customer_id=account.customer_id,
        channel=account.channel,
        provider=account.provider,
        address=account.address,
        credentials=account.credentials,
    )


class HookHttp:
    """The hooks' outbound HTTP client (follow-up calls such as LINE profiles and content), as a worker:
    the supervisor closes it after the REST listener drained, so no hook still uses it."""

    name = "hook-http"

    def __init__(self, timeout: float) -> None:
        self.client = httpx.AsyncClient(timeout=timeout)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.client.aclose()


def build_hook_context(
    use_cases: UseCases, settings: Settings, http: httpx.AsyncClient, executor: Executor
) -> HookContext:
    """The one HookContext of the process, over the same use cases (and ingest group commit) as gRPC."""

    async def load_account(provider: str, account_id: str) -> ChannelAccount | None:
        opened = use_cases.channel_accounts.load(provider, account_id)  # one indexed read, inline like API reads
        return channel_account(opened) if opened is not None else None

    async def receipt(report: Receipt) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            executor,
            use_cases.delivery.receipt,
            report.account_id,
            report.provider_message_id,
            report.delivery_status,
            report.error_code,
            report.error_message,
        )

    return HookContext(
        load_account=load_account,
        ingest=use_cases.ingest,
        receipt=receipt,
        public_url=settings.resolved_public_url,
        http=http,
    )


def hook_routes(adapters: Mapping[str, ChannelAdapter], hooks: HookContext) -> list[BaseRoute]:
    """Every adapter's routes (relative: the HTTP app mounts them under /v1.0/hooks)."""
    routes: list[BaseRoute] = []
    for adapter in adapters.values():
        routes.extend(adapter.hook_routes(hooks))
    return routes
