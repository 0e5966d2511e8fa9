"""Token -> customer resolution with a short positive cache.

Every call authenticates; the cache keeps that off the database on the hot
path. A revoked token stays usable for at most `ttl` seconds.
"""

from __future__ import annotations

import threading
import time

from convhub.server.api.dispatch import Caller
from convhub.server.store.customers import customer_for_token, hash_token
from convhub.server.store.db import Database


class StoredTokenAuthenticator:
    """Resolves API tokens against their stored SHA-256 hashes, keeping recent answers in memory."""

    def __init__(self, db: Database, *, ttl: float = 30.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Caller | None:
        """Cache first, then one indexed read (never waits on a lock: safe on the event loop)."""
        key = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self._db.read() as conn:
            customer_id = customer_for_token(conn, token)
        if customer_id is None:
            return None
        caller = Caller(customer_id)
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[key] = (now + self._ttl, caller)
        return caller
