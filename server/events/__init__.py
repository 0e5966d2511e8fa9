"""Events: the transactional outbox that streams and webhooks read."""
