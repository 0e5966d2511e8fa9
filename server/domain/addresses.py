"""Address normalisation: the same person must always produce the same room key.

Phone numbers become E.164 (libphonenumber), emails are lower-cased, LINE and
web chat ids are kept as given but checked for shape. Invalid input raises
AddressError with a description; the API layer names the field.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

ADDRESS_TYPES = ("tel", "email", "line", "webchat")
MAX_TARGET_LENGTH = 320
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OPAQUE_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")


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


@functools.lru_cache(maxsize=65536)
def normalize_target(address_type: str, target: str, *, default_region: str) -> str:
    """The canonical form of `target` for an address of `address_type` (cached: a pure function)."""
    target = target.strip()
    if not target:
        raise AddressError("must not be empty")
    if len(target) > MAX_TARGET_LENGTH:
        raise AddressError(f"longer than {MAX_TARGET_LENGTH} characters")
    if address_type == "tel":
        return normalize_e164(target, default_region)
    if address_type == "email":
        if not _EMAIL.match(target):
            raise AddressError("not an email address")
        return target.lower()
    if address_type in ("line", "webchat"):
        if not _OPAQUE_ID.match(target):
            raise AddressError("must be 1-128 characters of letters, digits and . _ : @ -")
        return target
    raise AddressError(f"unknown address type {address_type!r}")
