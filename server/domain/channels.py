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


# Account type -> the providers that may carry it; the first is the default.
ACCOUNT_PROVIDERS = {"sms": ("twilio", "telnyx"), "line": ("line",), "email": ("smtp",), "webchat": ("webchat",)}

# Provider -> the credential keys it needs, as (VoIPBIN `secret`, VoIPBIN `token`):
# the key that verifies inbound hooks (or identifies the account) first, the API key second.
PROVIDER_CREDENTIALS = {
    "twilio": ("account_sid", "auth_token"),
    "telnyx": ("public_key", "api_key"),
    "line": ("channel_secret", "channel_access_token"),
    "smtp": ("password", "username"),  # host, port, tls, from, reply_to, hook_secret: in credentials/provider_data
}


def account_provider(account_type: str, provider: str) -> str:
    """The provider an account of `account_type` uses: `provider`, or the type's default; "" for types without one.

    Raises ValueError naming the allowed providers when `provider` cannot carry the type.
    """
    allowed = ACCOUNT_PROVIDERS.get(account_type, ())
    if not provider:
        return allowed[0] if allowed else ""
    if provider not in allowed:
        names = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"{provider!r} cannot carry {account_type} accounts (allowed: {names})")
    return provider


def voipbin_credentials(provider: str, secret: str, token: str) -> dict[str, str]:
    """VoIPBIN's `secret` / `token` body fields as the provider's credential keys (README: "Accounts")."""
    keys = PROVIDER_CREDENTIALS.get(provider)
    if keys is None:
        raise ValueError(f"accounts without a provider take no secret or token (provider {provider!r})")
    values = {keys[0]: secret, keys[1]: token}
    return {key: value for key, value in values.items() if value}
