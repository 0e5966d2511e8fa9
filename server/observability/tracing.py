"""OpenTelemetry tracing, set up only when `OTEL_EXPORTER_OTLP_ENDPOINT` is configured.

Without it nothing here is imported beyond this module: no SDK, no exporter, no
database hooks, so tracing off costs a `None` check per call. With it, every
gRPC and REST call gets a SERVER span (continuing the caller's trace from a W3C
`traceparent` header or metadata entry), and every statement on both engines a
CLIENT child span (`StatementSpans`: SQL text with placeholders, never values).
Spans are batched and exported over OTLP/HTTP; the SDK reads the other standard
variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`,
`OTEL_BSP_SCHEDULE_DELAY`, ...).

Statement spans are our own SQLAlchemy event hooks rather than
opentelemetry-instrumentation-sqlalchemy: that package refuses SQLAlchemy 2.1
(nothing gets instrumented) and patches `create_engine` process-wide.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, event

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

# gRPC codes that mark a server span as failed (OpenTelemetry's semantic conventions for RPC servers).
GRPC_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})


class ServerSpans:
    """Starts and ends the SERVER span of each call; one per process, shared by both transports."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._provider = provider
        self._tracer = provider.get_tracer("convhub.server")
        self._extract = propagate.extract
        self._set_in_context = trace.set_span_in_context
        self._attach = context.attach
        self._detach = context.detach
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    def start(self, name: str, carrier: Mapping[str, str], attributes: dict[str, Any]) -> Span:
        return self._tracer.start_span(name, context=self._extract(carrier), kind=self._server, attributes=attributes)

    def activate(self, span: Span) -> object:
        """Make `span` the current one (database spans become its children); undo with `deactivate`."""
        return self._attach(self._set_in_context(span))

    def deactivate(self, token: object) -> None:
        self._detach(token)  # type: ignore[arg-type]

    def end(self, span: Span, attributes: dict[str, Any], failed: bool, name: str | None = None) -> None:
        if name is not None:  # known only once the call was routed
            span.update_name(name)
        span.set_attributes(attributes)
        if failed:
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """Export what is still buffered, then stop the exporter."""
        self._provider.shutdown()


class StatementSpans:
    """A CLIENT span per SQL statement run on `engine`, a child of whatever span is current."""

    _KEY = "_convhub_span"  # where a statement's span waits on its ExecutionContext

    def __init__(self, provider: TracerProvider, engine: Engine) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._tracer = provider.get_tracer("convhub.store")
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._base = {"db.system.name": engine.dialect.name, "db.namespace": engine.url.database or ""}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._failed)
        _STATEMENT_SPANS[engine] = self

    def _start(self, statement: str) -> Span:
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        attributes = {**self._base, "db.operation.name": operation, "db.query.text": statement}
        return self._tracer.start_span(operation, kind=self._client, attributes=attributes)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if context is not None:
            setattr(context, self._KEY, self._start(statement))

    @contextlib.contextmanager
    def around(self, statement: str) -> Iterator[None]:
        """The span of a statement SQLAlchemy's hooks do not see (a COPY run on the driver's cursor)."""
        span = self._start(statement)
        try:
            yield
        except BaseException as exc:
            span.set_status(self._error)
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            span.end()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        span = getattr(context, self._KEY, None)
        if span is not None:
            setattr(context, self._KEY, None)
            span.end()

    def _failed(self, exception_context: Any) -> None:
        span = getattr(exception_context.execution_context, self._KEY, None)
        if span is not None:
            setattr(exception_context.execution_context, self._KEY, None)
            span.set_status(self._error)
            span.set_attribute("error.type", type(exception_context.original_exception).__name__)
            span.end()


# Each traced engine's StatementSpans, for statements run beside SQLAlchemy's execution (statement_span).
_STATEMENT_SPANS: weakref.WeakKeyDictionary[Engine, StatementSpans] = weakref.WeakKeyDictionary()


def statement_span(conn: Connection, statement: str) -> contextlib.AbstractContextManager[None]:
    """A CLIENT span around `statement` when `conn`'s engine is traced; otherwise nothing."""
    spans = _STATEMENT_SPANS.get(conn.engine) if _STATEMENT_SPANS else None
    return contextlib.nullcontext() if spans is None else spans.around(statement)


def start_tracing(endpoint: str, service_name: str, engines: Iterable[Engine]) -> ServerSpans | None:
    """The process's span factory exporting to `endpoint` (an OTLP/HTTP base URL), or None when unset."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    for engine in engines:
        StatementSpans(provider, engine)
    return ServerSpans(provider)


# The W3C trace-context entries a caller may send; nothing else (a token, say) is copied.
PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def carrier_from_grpc_metadata(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """The trace-context entries of gRPC metadata (keys arrive lower case)."""
    return {key: value for key, value in metadata or () if key in PROPAGATION_KEYS and isinstance(value, str)}


def carrier_from_asgi_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The trace-context headers of an ASGI request (header names arrive lower case)."""
    carrier = {}
    for key, value in headers:
        name = key.decode("latin-1")
        if name in PROPAGATION_KEYS:
            carrier[name] = value.decode("latin-1")
    return carrier
