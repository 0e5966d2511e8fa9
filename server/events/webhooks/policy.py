"""The webhook settings in the form the emitter and the API use them (validated in config.py)."""

from __future__ import annotations

from dataclasses import dataclass

from convhub.server.config import Settings
from convhub.server.events.webhooks.schedule import RetrySchedule
from convhub.server.events.webhooks.targets import IPNetwork, parse_networks


@dataclass(frozen=True)
class WebhookPolicy:
    schedule: RetrySchedule
    allowed_networks: tuple[IPNetwork, ...]
    rotation_grace_us: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        return cls(
            RetrySchedule.parse(settings.webhook_retry_schedule),
            parse_networks(settings.webhook_allowed_networks),
            int(settings.webhook_rotation_grace * 1_000_000),
        )
