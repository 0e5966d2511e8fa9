"""One family of API errors, mapped to gRPC status (with rich details) in one place.

Services and handlers raise these (plain values; services never touch grpc
beyond naming the code); the gRPC layer turns them into a `google.rpc.Status`
with `ErrorInfo` (a machine-readable reason) and, for bad input, `BadRequest`
naming the offending field. The REST shim maps the same status to HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "convhub.v1"
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` with control characters and lone surrogates escaped (`\\u0000`).

    Error texts quote request data (a map key, an unknown field name); escaped,
    they always encode as UTF-8 in JSON, a gRPC trailer and a log line.
    """
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass
class FieldViolation:
    """One bad field: `field` is the proto path (`conversation.self.target`)."""

    field: str
    description: str


class ApiError(Exception):
    """Base of every error a handler raises on purpose; carries its gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        message = printable(message)
        super().__init__(message)
        self.message = message
        self.reason = reason or self.code.name
        self.metadata = {k: printable(v) for k, v in metadata.items()} if metadata else {}
        self.violations = [FieldViolation(printable(v.field), printable(v.description)) for v in violations or ()]

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status sent as `grpc-status-details-bin`."""
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata))
        details = [info]
        if self.violations:
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in self.violations
                    ]
                )
            )
            details.append(bad)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


class InvalidArgument(ApiError):
    """Bad input: always names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field_path: str, description: str, *, reason: str = "INVALID_ARGUMENT") -> None:
        super().__init__(
            message=f"{field_path}: {description}",
            reason=reason,
            metadata={"field": field_path},
            violations=[FieldViolation(field_path, description)],
        )


class NotFound(ApiError):
    """The resource does not exist for this customer (or at all: never tell which)."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource: str, resource_id: str) -> None:
        super().__init__(
            message=f"{resource} {resource_id!r} not found",
            reason=f"{resource.upper()}_NOT_FOUND",
            metadata={"resource": resource, "id": resource_id},
        )


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str = "missing or invalid API token") -> None:
        super().__init__(message=message, reason="UNAUTHENTICATED")


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ApiError):
    """The request is well formed but the system is not in a state to serve it; the message says what to fix."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, *, reason: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message=message, reason=reason)


class Unimplemented(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class OutOfRange(ApiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def internal_status(message: str = "internal error") -> status_pb2.Status:
    """Status for an unexpected exception: no internals leak to the caller."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[info])
