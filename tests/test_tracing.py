"""OpenTelemetry: a real `convhub serve` exports server and database spans to a loopback OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine
from convhub.v1 import conversation_pb2
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import BACKENDS, TEST_SECRET_KEY, create_database, start_server
from tests.support import Api

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


class OtlpReceiver:
    """A tiny OTLP/HTTP trace receiver on loopback: decodes each ExportTraceServiceRequest it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend((resource, span) for span in scope_spans.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from create_database(request.param, tmp_path)


def test_calls_and_their_statements_are_exported_as_spans_of_one_trace(database_url: str, tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "convhub-test"}
        proc, grpc_target, http_base, _ = start_server(database_url, data_dir=tmp_path, env=env)
        try:
            engine = create_db_engine(database_url, pool_size=1)
            customer_id = create_customer(engine, "traced")
            token = create_token(engine, customer_id).token
            engine.dispose()
            auth = (("authorization", f"Bearer {token}"),)
            with grpc.insecure_channel(grpc_target) as channel:
                api = Api.for_tenant(channel, auth)
                conversation_id = api.sms(text="traced").conversation.id
                api.conversations.GetConversation(
                    cs.GetConversationRequest(id=conversation_id), metadata=(*auth, ("traceparent", TRACEPARENT))
                )
                # A write: on PostgreSQL it runs on a worker thread, and its statements must still join the call.
                patch = conversation_pb2.Conversation(id=conversation_id, name="renamed")
                api.conversations.UpdateConversation(
                    cs.UpdateConversationRequest(conversation=patch, update_mask={"paths": ["name"]})
                )
            response = httpx.get(
                f"{http_base}/v1.0/conversations/{conversation_id}", params={"token": token}, timeout=10
            )
            assert response.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes the batched spans
            proc.communicate(timeout=30)
        spans = [span for _, span in receiver.spans]
        assert {resource.get("service.name") for resource, _ in receiver.spans} == {"convhub-test"}

    def server_span(name: str) -> Any:
        found = [s for s in spans if s.name == name and s.kind == SERVER_KIND]
        assert len(found) == 1, [s.name for s in spans]
        return found[0]

    def statements_under(parent: Any) -> list[Any]:
        return [s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id]

    get = server_span("/convhub.v1.ConversationService/GetConversation")
    assert get.trace_id.hex() == TRACE_ID  # the caller's traceparent continued
    get_attributes = attributes(get)
    assert get_attributes["rpc.system"] == "grpc" and get_attributes["rpc.method"] == "GetConversation"
    assert get_attributes["rpc.service"] == "convhub.v1.ConversationService"
    assert get_attributes["rpc.grpc.status_code"] == "OK" and get_attributes["convhub.customer_id"] == customer_id
    assert any("SELECT" in s.name for s in statements_under(get)), [s.name for s in statements_under(get)]

    update = server_span("/convhub.v1.ConversationService/UpdateConversation")
    assert any("UPDATE" in s.name for s in statements_under(update)), [s.name for s in statements_under(update)]

    rest = server_span("GET /v1.0/conversations/{id}")
    rest_attributes = attributes(rest)
    assert rest_attributes["http.route"] == "/v1.0/conversations/{id}"
    assert rest_attributes["http.response.status_code"] == 200
    assert rest_attributes["convhub.customer_id"] == customer_id
    assert statements_under(rest)
    assert token not in str(receiver.spans), "a token reached a span"


def test_without_an_endpoint_no_opentelemetry_code_is_loaded(tmp_path: Path) -> None:
    script = f"""
import sys
from convhub.server.observability.setup import Observability
from convhub.server.config import load_settings
from convhub.server.store.db import open_database
from convhub.server.store.secrets import SecretBox
db = open_database("sqlite:///{tmp_path / "t.db"}", workers=1, secrets=SecretBox(["{TEST_SECRET_KEY}"]))
obs = Observability(load_settings(), db)
assert obs.spans is None and obs.observes_calls
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    env = {"PATH": "/usr/bin:/bin", "CONVHUB_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
