"""convhub server: gRPC API, REST shim, storage and event outbox."""
