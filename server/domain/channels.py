"""Which address type each channel speaks, and which channel each account type serves."""

from __future__ import annotations

# Conversation type (channel) -> the address type of both its endpoints.
CHANNEL_ADDRESS_TYPE = {
    "message": "tel",
    "line": "line",
    "email": "email",
    "webchat": "webchat",
    "whatsapp": "whatsapp",
}

# Account type -> the channel (conversation type) it carries.
ACCOUNT_CHANNEL = {"sms": "message", "line": "line", "email": "email", "webchat": "webchat", "whatsapp": "whatsapp"}


def address_type_for_account(account_type: str) -> str:
    return CHANNEL_ADDRESS_TYPE[ACCOUNT_CHANNEL[account_type]]
