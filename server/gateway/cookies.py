"""API tokens sent as cookies: VoIPBIN's API reads `token` and `accesskey` cookies.

A browser app written for VoIPBIN logs in once and lets the cookie ride along;
the values join the call's other credentials, so a cookie and a different
header are ambiguous (400) like any two different credentials.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

CREDENTIAL_COOKIES = ("token", "accesskey")


def credential_cookies(header: str) -> list[tuple[str, str]]:
    """`(cookie name, value)` for each credential cookie in one `Cookie:` header; a malformed header names none."""
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return []
    return [(f"cookie {name}", jar[name].value) for name in CREDENTIAL_COOKIES if name in jar and jar[name].value]
