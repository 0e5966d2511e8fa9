"""Operability: Prometheus metrics, one log line per call, OpenTelemetry tracing.

`metrics.py` holds the one registry every metric lives in; `logs.py` sets up log
output (text or JSON lines); `calls.py` is the per-call record the dispatcher fills
in (customer id); `grpc_calls.py` and `http_calls.py` observe each call of their
transport (metrics, access log line, server span); `tracing.py` sets up the
OpenTelemetry SDK, only when an OTLP endpoint is configured; `error_log.py` logs an
unexpected error (transports, workers) without any of the request's data.
"""
