"""Address normalisation: the same person must always produce the same room key.

Phone numbers become E.164 (libphonenumber), emails are syntax-checked
(email-validator) and lower-cased, LINE and
web chat ids are kept as given but checked for shape. Invalid input raises
AddressError (a bare target) or RuleViolation (an address of a command,
naming the field).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import email_validator
import phonenumbers

from convhub.server.domain.violations import RuleViolation

MAX_TARGET_LENGTH = 320
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OPAQUE_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_SIP_URI = re.compile(r"^(?i:sips?):[^\s@]+@[^\s@]+$")
# VoIPBIN's own endpoints, named by their UUID (CommonAddress: "UUID for agent/conference/extension").
VOIPBIN_ID_TYPES = frozenset({"agent", "ai", "ai_team", "conference", "extension"})


@dataclass(frozen=True, slots=True)
class Address:
    """An endpoint: `type` is the stored short name (`tel`, `email`, `line`, `webchat`, `whatsapp`, `sip`,
    `agent`, ...; "" when unset)."""

    type: str
    target: str
    name: str = ""


class AddressError(ValueError):
    """The address cannot be normalised; the message says why."""


def normalize_e164(target: str, default_region: str) -> str:
    """`(555) 123-4567` with region US -> `+15551234567`; rejects what cannot be a phone number."""
    try:
        number = phonenumbers.parse(target, default_region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(number):
        raise AddressError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(target: str) -> str:
    """Syntax checked by email-validator (no DNS; `.test` allowed for test setups), then lower-cased whole:
    the same mailbox must give the same room key and person whatever case a client used."""
    if not _EMAIL.match(target):
        raise AddressError("not an email address")
    try:
        valid = email_validator.validate_email(target, check_deliverability=False, test_environment=True)
    except email_validator.EmailNotValidError as exc:
        raise AddressError(f"not an email address: {exc}") from None
    return valid.normalized.lower()


@functools.lru_cache(maxsize=65536)
def normalize_target(address_type: str, target: str, *, default_region: str) -> str:
    """The canonical form of `target` for an address of `address_type` (cached: a pure function)."""
    target = target.strip()
    if not target:
        raise AddressError("must not be empty")
    if len(target) > MAX_TARGET_LENGTH:
        raise AddressError(f"longer than {MAX_TARGET_LENGTH} characters")
    if address_type in ("tel", "whatsapp"):  # a WhatsApp user is a phone number
        return normalize_e164(target, default_region)
    if address_type == "email":
        return normalize_email(target)
    if address_type in ("line", "webchat", "web_session"):
        if not _OPAQUE_ID.match(target):
            raise AddressError("must be 1-128 characters of letters, digits and . _ : @ -")
        return target
    if address_type in VOIPBIN_ID_TYPES:
        if not _UUID.match(target):
            raise AddressError(f"a {address_type} address is a UUID")
        return target.lower()
    if address_type == "sip":
        if not _SIP_URI.match(target):
            raise AddressError("not a SIP URI (sip:user@host)")
        scheme, _, rest = target.partition(":")
        return f"{scheme.lower()}:{rest}"
    raise AddressError(f"unknown address type {address_type!r}")


def normalize_address(field: str, address: Address, *, expected_type: str | None, default_region: str) -> Address:
    """`address` with its target in canonical form, its type checked against the channel's (`expected_type`).

    An unset type takes the expected one; without an expected type (a
    participant's addresses may be of any channel) the type is required.
    """
    address_type = address.type or expected_type
    if address_type is None:
        raise RuleViolation(f"{field}.type", "is required")
    if expected_type is not None and address_type != expected_type:
        raise RuleViolation(f"{field}.type", f"must be {expected_type} on this channel")
    if not address.target:
        raise RuleViolation(f"{field}.target", "is required")
    try:
        target = normalize_target(address_type, address.target, default_region=default_region)
    except AddressError as exc:
        raise RuleViolation(f"{field}.target", str(exc)) from None
    return Address(address_type, target, address.name)
