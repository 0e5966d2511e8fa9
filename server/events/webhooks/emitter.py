"""The webhook emitter worker: fan events out into deliveries, and send due deliveries.

Two loops on the service's event loop; their database work runs on two
threads of its own, so neither the API's loop nor its database threads wait
on it.

* fan-out: woken by the doorbell (and a re-poll timer: a lost ring costs
  latency, never an event), turns new events into delivery rows
  (`store.webhooks.fan_out`).
* delivery: each cycle is one transaction that records the outcomes of the
  attempts that finished and leases as many due deliveries as there are free
  slots, at most `PER_ENDPOINT` in flight per endpoint and `MAX_IN_FLIGHT` in
  all: a hanging endpoint ties up its own few slots for 5 s each, never the
  others'. A lease outlives the 5 s attempt with a margin; after `kill -9` it
  expires and any replica sends the delivery again, with the same
  `webhook-id` (at least once).

`stop()` stops claiming, lets attempts in flight finish, records them and
gives back every lease this worker still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from convhub.server.events.webhooks.body import render_event
from convhub.server.events.webhooks.policy import WebhookPolicy
from convhub.server.events.webhooks.sender import ATTEMPT_TIMEOUT, WebhookSender
from convhub.server.observability.error_log import log_unexpected
from convhub.server.store import webhooks as store
from convhub.server.store.db import Database

log = logging.getLogger("convhub.webhooks")

T = TypeVar("T")

POLL_INTERVAL = 1.0
MAX_IN_FLIGHT = 256
PER_ENDPOINT = 16
LEASE_US = int((ATTEMPT_TIMEOUT + 10) * 1_000_000)


def _render(payload: bytes) -> store.RenderedBody:
    event = render_event(payload)
    return store.RenderedBody(event.event_id, event.body, event.ordering_key)


class WebhookEmitter:
    """A `Worker` (server/workers.py) delivering every customer's webhooks from this process."""

    name = "webhooks"

    def __init__(self, db: Database, policy: WebhookPolicy) -> None:
        self._db = db
        self._policy = policy
        self.worker_id = f"{socket.gethostname()[:32]}:{os.getpid()}:{os.urandom(4).hex()}"
        self._executor: ThreadPoolExecutor | None = None
        self._sender: WebhookSender | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._per_endpoint: Counter[str] = Counter()
        self._outcomes: list[store.Outcome] = []
        self._wake = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(2, thread_name_prefix="convhub-webhooks")
        self._sender = WebhookSender(self._policy)
        listener = self._db.doorbell.listener()
        self._tasks = [
            asyncio.create_task(self._fan_out_loop(listener), name="webhook-fan-out"),
            asyncio.create_task(self._delivery_loop(), name="webhook-delivery"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        fan_out, delivery = self._tasks
        fan_out.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fan_out
        await delivery
        if self._sender is not None:
            await self._sender.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _open_secret(self, sealed: str) -> str:
        return str(self._db.secrets.open(sealed))

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- fan-out --------------------------------------------------------------

    def _fan_out_once(self) -> tuple[int, bool]:
        with self._db.read() as conn:
            if not store.fan_out_pending(conn):
                return 0, False
        first = self._policy.schedule.delay_before(0) or 0.0
        with self._db.writer.begin() as conn:
            return store.fan_out(conn, _render, int(first * 1_000_000))

    async def _fan_out_loop(self, listener: Any) -> None:
        while not self._stopping:
            try:
                made, more = await self._in_thread(self._fan_out_once)
            except Exception as exc:
                log_unexpected(log, "the webhook fan-out (retrying)", exc)
                made, more = 0, False
            if made:
                self._wake.set()
            if not more:
                await listener.wait(POLL_INTERVAL)

    # -- delivery -------------------------------------------------------------

    def _cycle(self, outcomes: list[store.Outcome], free: int, busy: dict[str, int]) -> list[store.ClaimedDelivery]:
        with self._db.writer.begin() as conn:
            store.record_outcomes(conn, self.worker_id, outcomes)
            if free <= 0:
                return []
            full = [e for e, n in busy.items() if n >= PER_ENDPOINT]
            return store.claim_due(
                conn, self.worker_id, free, LEASE_US, lambda e: PER_ENDPOINT - busy.get(e, 0), self._open_secret, full
            )

    async def _delivery_loop(self) -> None:
        while True:
            self._wake.clear()
            free = 0 if self._stopping else MAX_IN_FLIGHT - len(self._in_flight)
            outcomes, self._outcomes = self._outcomes, []
            claimed: list[store.ClaimedDelivery] = []
            if outcomes or free > 0:
                try:
                    claimed = await self._in_thread(self._cycle, outcomes, free, dict(self._per_endpoint))
                except Exception as exc:
                    log_unexpected(log, "a webhook delivery cycle (retrying)", exc)
                    self._outcomes[:0] = outcomes
                    await asyncio.sleep(POLL_INTERVAL)
                    continue
            for d in claimed:
                self._per_endpoint[d.endpoint_id] += 1
                task = asyncio.create_task(self._attempt(d))
                self._in_flight[task] = d.endpoint_id
            if self._stopping:
                if not self._in_flight:
                    if self._outcomes:
                        continue
                    break
                await self._wait_in_flight()
                continue
            if claimed and len(claimed) == free:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
        try:
            await self._in_thread(self._release)
        except Exception as exc:
            log_unexpected(log, "releasing webhook leases (they expire on their own)", exc)

    async def _wait_in_flight(self) -> None:
        """On stop: attempts finish within their 5 s; anything past a margin is cancelled (its lease expires)."""
        _, pending = await asyncio.wait(list(self._in_flight), timeout=ATTEMPT_TIMEOUT + 2)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _release(self) -> None:
        with self._db.writer.begin() as conn:
            store.release(conn, self.worker_id)

    async def _attempt(self, d: store.ClaimedDelivery) -> None:
        assert self._sender is not None
        try:
            outcome = await self._sender.attempt(d)
            # Appended after the await: the loop swaps `_outcomes` for a new list while attempts run.
            self._outcomes.append(outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_unexpected(log, "a webhook attempt (its lease expires and it is retried)", exc)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.pop(task, None)
            self._per_endpoint[d.endpoint_id] -= 1
            if self._per_endpoint[d.endpoint_id] <= 0:
                del self._per_endpoint[d.endpoint_id]
            self._wake.set()
