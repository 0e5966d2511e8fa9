"""The provider adapters this build speaks, keyed by provider name (accounts' `provider`)."""

from __future__ import annotations

from convhub.server.channels.adapter import ChannelAdapter
from convhub.server.channels.email import EmailAdapter, OptOut
from convhub.server.channels.line import LineAdapter
from convhub.server.channels.telnyx import TelnyxAdapter
from convhub.server.channels.twilio import TwilioAdapter
from convhub.server.channels.webchat import WebchatAdapter
from convhub.server.config import Settings
from convhub.server.services.email_threads import EmailThreads
from convhub.server.store.media_files import MediaFiles


def build_adapters(
    settings: Settings, media: MediaFiles, threads: EmailThreads | None = None, opt_out: OptOut | None = None
) -> dict[str, ChannelAdapter]:
    """One adapter per provider, pointed at the provider API base URLs from settings."""
    adapters: list[ChannelAdapter] = [
        TwilioAdapter(settings.twilio_api_url, media),
        TelnyxAdapter(settings.telnyx_api_url, media),
        LineAdapter(settings.line_api_url, settings.line_data_api_url, media),
        EmailAdapter(
            media,
            threads,
            public_url=settings.resolved_public_url,
            timeout=settings.provider_timeout,
            opt_out=opt_out,
        ),
        WebchatAdapter(),
    ]
    return {adapter.provider: adapter for adapter in adapters}
