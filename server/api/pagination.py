"""Page requests (AIP-158): `page_size` and `page_token` checked, naming the field on error."""

from __future__ import annotations

from convhub.server.domain.page_times import parse_time_token
from convhub.server.errors import InvalidArgument
from convhub.server.store.pages import Page, decode_page_token, decode_token

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100


def parse(page_size: int, page_token: str, scope: str) -> Page:
    """Validate page_size/page_token; `scope` names the list (e.g. `messages:<conversation id>`)."""
    size = size_in_force(page_size)
    if not page_token:
        return Page(size, None, scope)
    try:
        before = parse_time_token(page_token)
    except ValueError:
        raise InvalidArgument("page_token", "not a real time") from None
    if before is not None:  # VoIPBIN's hand-built token: items created before that time, newest first
        return Page(size, None, scope, before)
    try:
        after = decode_page_token(page_token, scope)
    except ValueError:
        raise InvalidArgument("page_token", "invalid or from another list") from None
    return Page(size, after, scope)


def size_in_force(page_size: int) -> int:
    """The page size a request asks for: the default when 0, at most the maximum; negative is refused."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def sequence_after(page_token: str, scope: str) -> int:
    """The sequence a token made by `encode_token(scope, sequence)` continues after (sequence-ordered lists)."""
    try:
        key = decode_token(page_token, scope)
        if len(key) != 1 or not isinstance(key[0], int) or isinstance(key[0], bool):
            raise ValueError("not a sequence token")
    except ValueError:
        raise InvalidArgument("page_token", "invalid or from another list") from None
    return key[0]
