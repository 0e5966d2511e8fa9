"""Protobuf wire-format pieces written by hand where building a message per use cost too much.

The outbox writes each event's envelope with them, the broadcaster frames
stored events as fields of a streamed response; tests pin both to
protobuf's own serialization.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint (a tag, a length, an integer field's value)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(tag: bytes, value: bytes) -> bytes:
    """One length-delimited field (bytes, string or message): its tag, the length, the value."""
    return tag + varint(len(value)) + value
