"""Opt-out rules: SMS keywords (carrier conventions) and the set of channels a person refuses.

A message whose whole text, trimmed and case-folded, is a STOP keyword opts
its sender out of SMS (`message`); a START keyword opts them back in. Any
other text, even containing the word, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

STOP_KEYWORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
START_KEYWORDS = frozenset({"start", "unstop", "yes"})
SMS_CHANNEL = "message"


def sms_keyword_opt_out(text: str) -> bool | None:
    """True for a STOP keyword, False for a START keyword, None for any other text."""
    word = text.strip().casefold()
    if word in STOP_KEYWORDS:
        return True
    if word in START_KEYWORDS:
        return False
    return None


def with_opt_out(channels: Sequence[str], channel: str, opted_out: bool) -> list[str]:
    """`channels` with `channel` added (opted out) or removed, sorted (a stable stored form)."""
    result = set(channels)
    if opted_out:
        result.add(channel)
    else:
        result.discard(channel)
    return sorted(result)
