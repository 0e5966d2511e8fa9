"""The web chat adapter: a message to a visitor is delivered once it is committed.

There is no provider to call: the visitor's page reads its conversation's
message events over SSE (`GET /v1.0/webchat/events`), and the event of an
outgoing message commits with the message itself (the outbox). So `send`
accepts at once, with the message id as the provider's id; the visitor API
lives in `server/webchat/`, not under the provider hooks.
"""

from __future__ import annotations

import httpx
from starlette.routing import BaseRoute

from convhub.server.channels.adapter import Accepted, ChannelAccount, HookContext, Outbound


class WebchatAdapter:
    provider = "webchat"
    channel = "webchat"

    async def send(self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound) -> Accepted:
        return Accepted(provider_message_id=outbound.message_id, delivery_status="sent")

    async def find_sent(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, since_us: int
    ) -> Accepted | None:
        # Nothing left the process: the visitor already has it (or will, from the event log).
        return Accepted(provider_message_id=outbound.message_id, delivery_status="sent")

    def hook_routes(self, hooks: HookContext) -> list[BaseRoute]:
        return []  # visitors post to /v1.0/webchat/messages with their visitor token (server/webchat/routes.py)
