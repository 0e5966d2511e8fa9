"""gRPC status -> HTTP status and the JSON error body, as grpc-gateway maps them.

Both transports start from the same `google.rpc.Status` (`ApiError.to_status()`),
so a REST client gets the same code name, message and details (`ErrorInfo`,
`BadRequest` naming the field) a gRPC client does, only in JSON:

    {"error": {"status": "NOT_FOUND", "reason": "CONVERSATION_NOT_FOUND", "message": "...",
               "request_id": "req_...", "code": 404, "details": [{"@type": ...}]}}

`status`, `reason`, `message`, `request_id` and `details` are VoIPBIN's envelope
(`lib/apierror/envelope.go`; `reason` is the `ErrorInfo` reason, else the status
name); `code` (the HTTP status) and the typed details are grpc-gateway's extras.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from convhub.server.errors import ApiError, internal_status
from convhub.server.observability.error_log import log_unexpected

log = logging.getLogger(__name__)

# grpc-gateway's runtime.HTTPStatusFromCode.
HTTP_FROM_CODE: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}

CODE_NAMES: dict[int, str] = {v.number: v.name for v in code_pb2.Code.DESCRIPTOR.values}


def http_status(code: int) -> int:
    return HTTP_FROM_CODE.get(code, 500)


def _detail(any_msg: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json_format.MessageToDict(any_msg, preserving_proto_field_name=True)
        return result
    except (TypeError, KeyError, json_format.Error):  # type not in the descriptor pool
        return {"@type": any_msg.type_url}


def _reason(status: status_pb2.Status, name: str) -> str:
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.reason:
            return info.reason
    return name


def error_payload(status: status_pb2.Status, http: int | None = None, request_id: str = "") -> dict[str, Any]:
    """The `{"error": {...}}` object for a status (also the last line of a failed stream)."""
    name = CODE_NAMES.get(status.code, "UNKNOWN")
    return {
        "error": {
            "status": name,
            "reason": _reason(status, name),
            "message": status.message,
            "request_id": request_id,
            "code": http if http is not None else http_status(status.code),
            "details": [_detail(d) for d in status.details],
        }
    }


def status_for_exception(exc: BaseException) -> status_pb2.Status:
    """The status for any exception: ApiErrors say what went wrong, anything else is a bare INTERNAL."""
    if isinstance(exc, ApiError):
        return exc.to_status()
    if isinstance(exc, TimeoutError):
        return status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="deadline exceeded")
    log_unexpected(log, "a REST call", exc)
    return internal_status()


def simple_status(code: int, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message)


# One encoder for every call: `json.dumps` with options builds a new one each time (~2 us of ~8 per body).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the one serializer for every gateway response."""
    return _JSON.encode(obj).encode("utf-8")
