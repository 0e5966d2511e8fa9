"""Client-side errors: one exception family, mapped from gRPC status in one place.

Callers should not have to know gRPC to handle a missing conversation or a bad
field, so every failed call surfaces as a `ConvhubError` subclass chosen by the
status code. The server's rich details (`google.rpc.Status` in the
`grpc-status-details-bin` trailer: `ErrorInfo` with a machine-readable reason,
`BadRequest` naming the offending fields) are unpacked here, so callers can
branch on `err.reason` or show `err.field_violations` without parsing text.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class ConvhubError(Exception):
    """A convhub call failed.

    Attributes:
        code: the gRPC status code.
        message: the server's human-readable message (status details).
        reason: `google.rpc.ErrorInfo.reason` when the server sent one, else None.
        domain: `google.rpc.ErrorInfo.domain` when present.
        metadata: `google.rpc.ErrorInfo.metadata` (empty when absent).
        field_violations: `(field, description)` pairs from `google.rpc.BadRequest`.
        status: the full `google.rpc.Status`, when the server sent rich details.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str | None = None,
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.field_violations = field_violations or []
        self.status = status

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        if self.field_violations:
            text += " (" + "; ".join(f"{f}: {d}" for f, d in self.field_violations) + ")"
        return text


class CancelledError(ConvhubError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(ConvhubError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(ConvhubError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(ConvhubError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(ConvhubError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ConvhubError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(ConvhubError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(ConvhubError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(ConvhubError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(ConvhubError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(ConvhubError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(ConvhubError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ConvhubError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(ConvhubError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(ConvhubError):
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(ConvhubError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[ConvhubError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def _rich_status(err: Any) -> status_pb2.Status | None:
    """The `google.rpc.Status` trailer, or None when absent or inconsistent.

    `from_call` raises ValueError when the trailer disagrees with the call's
    code/message; a malformed trailer must not hide the real error, so it is
    ignored rather than raised.
    """
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
    except (ValueError, TypeError, AttributeError):
        return None
    return status


def from_rpc_error(err: grpc.RpcError) -> ConvhubError:
    """Translate a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`).

    This is the only place status codes become exception classes.
    """
    code: grpc.StatusCode = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    message: str = (err.details() if callable(getattr(err, "details", None)) else None) or str(err)
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    status = _rich_status(err)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason or None, info.domain or None, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
    cls = _BY_CODE.get(code, ConvhubError)
    return cls(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        status=status,
    )
