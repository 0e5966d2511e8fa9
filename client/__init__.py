"""Typed Python client for convhub.

Two clients with the same methods, one blocking and one for asyncio::

    from convhub.client import ConvhubClient, NotFoundError

    with ConvhubClient("127.0.0.1:50051", token=TOKEN) as hub:
        for conversation in hub.iter_conversations():
            print(conversation.id, conversation.peer.target)

    async with AsyncConvhubClient("127.0.0.1:50051", token=TOKEN) as hub:
        async for conversation in hub.iter_conversations():
            ...

Every call takes `timeout=` (one deadline for the call, retries included),
retries UNAVAILABLE with backoff when that is safe, and raises a
`ConvhubError` subclass carrying the server's reason and field violations.
"""

from ._async import AsyncConvhubClient
from ._sync import ConvhubClient
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    ConvhubError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    from_rpc_error,
)
from .retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "AbortedError",
    "AlreadyExistsError",
    "AsyncConvhubClient",
    "CancelledError",
    "ConvhubClient",
    "ConvhubError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "from_rpc_error",
]
