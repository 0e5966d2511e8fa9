"""The record of the call being served, shared by the transport's observer and the dispatcher.

The observer (gRPC handler wrapper, HTTP middleware) opens a `CallRecord` before the
call and reads it after; the dispatcher notes who the caller is once the token
checks out. It is a mutable object behind a context variable, so a note made in
a task the call spawned (`asyncio.wait_for` runs the call in one) is still seen.
Only what is safe to log goes in here: never a token or any request data.
"""

from __future__ import annotations

from contextvars import ContextVar


class CallRecord:
    __slots__ = ("customer_id",)

    def __init__(self) -> None:
        self.customer_id: str | None = None


CURRENT_CALL: ContextVar[CallRecord | None] = ContextVar("convhub_current_call", default=None)


def note_customer(customer_id: str) -> None:
    """Record the authenticated customer of the current call (a no-op when nothing observes calls)."""
    record = CURRENT_CALL.get()
    if record is not None:
        record.customer_id = customer_id
